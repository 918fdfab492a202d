"""Behaviour cloning from the exact state learns the expert (demos off-benchmark, closed loop on the benchmark)."""
import torch

from training.learnability import closed_loop, demonstrations, train


def test_state_bc_solves_lift():
    torch.set_num_threads(1)
    x, y, n = demonstrations("builtin_lift", demos_per_task=8)
    assert x.shape[0] == y.shape[0] == n and y.shape[1] == 7
    model = train(x, y, steps=600, seed=0)
    res = closed_loop(model.act, "builtin_lift", per_task=4)
    print(res)
    assert res["episodes"] == 12 and res["success_rate"] >= 0.5
