"""``amplify eval-world`` runs on benchmark init states, with the expert and random baselines."""
import json

import numpy as np

from training.eval_world import ExpertPolicy, benchmark_episodes, evaluate, random_policy, save_videos
from world import SUITES, get_init_states


def test_benchmark_episodes_cover_every_task():
    plan = benchmark_episodes("builtin_all", per_task=3, first_init=5)
    assert len(plan) == 3 * len(SUITES["builtin_all"])
    assert {t for t, _ in plan} == set(SUITES["builtin_all"]) and {k for _, k in plan} == {5, 6, 7}
    assert benchmark_episodes("builtin_push", episodes=6)[4] == (SUITES["builtin_push"][0], 1)


def test_expert_and_random_on_the_same_states(tmp_path):
    suite = "builtin_lift"
    ex = evaluate(ExpertPolicy(), suite, per_task=2, progress=False, name="expert")
    rnd = evaluate(random_policy(0), suite, per_task=2, progress=False, name="random")
    assert ex["episodes"] == rnd["episodes"] == 2 * len(SUITES[suite])
    assert [(r["task"], r["init"]) for r in ex["results"]] == [(r["task"], r["init"]) for r in rnd["results"]]
    assert ex["success_rate"] == 1.0 and rnd["success_rate"] < 0.5
    assert set(ex["per_family"]) == {"lift"}
    # the expert always moves the named object first; the first-moved record agrees with a replay
    assert ex["target_first"] == {"lift": 1.0} and all(r["target_first"] for r in ex["results"])
    assert 0.0 <= rnd["target_first"]["lift"] < 1.0
    # the recorded actions replay the episode: the expert's succeed from the benchmark state
    from world import BuiltinEnv
    r = ex["results"][1]
    env = BuiltinEnv(r["task"], render=False)
    env.set_init_state(get_init_states(r["task"])[r["init"]])
    oks = [env.step(np.asarray(a))[2] for a in r["actions"]]
    assert oks[-1] and not any(oks[:-1]) and len(oks) == r["steps"]
    from training.eval_world import moved_objects
    env.set_init_state(get_init_states(r["task"])[r["init"]])
    start, first = env.get_sim_state(), None
    for a in r["actions"]:
        env.step(np.asarray(a))
        first = first if first is not None else (moved_objects(start, env.get_sim_state()) or [None])[0]
    assert first == r["first_moved"] == env.task.target
    written = save_videos(ex, tmp_path, "expert")
    assert len(written) == len(SUITES[suite]) and all(p.endswith("_success.gif") for p in written)
    json.dumps(ex)  # results are plain JSON


def test_eval_world_command_baselines_only(tmp_path, capsys):
    from amplify_cli.main import main

    out = tmp_path / "r.json"
    assert main(["eval-world", "--no-model", "--suite", "builtin_push", "--per-task", "1", "--json", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "family push" in text and "expert" in text and "random" in text
    res = json.loads(out.read_text())
    assert set(res) == {"expert", "random"} and res["expert"]["episodes"] == 4


def test_eval_world_runs_the_model_in_the_precision_asked(tmp_path, small_bundle, monkeypatch):
    from amplify.inference import model_precision
    from amplify.policy import AMPLIFY
    from amplify_cli.main import main

    import copy

    import torch

    from world import get_suite

    model = copy.deepcopy(small_bundle)  # the session's bundle stays as it is
    names = [t.instruction for t in get_suite("builtin_push")]
    model.set_instructions(names, torch.randn(len(names), model.cfg.forward_dynamics.text_embed_dim))
    path = model.save(tmp_path / "bundle")
    prepared = []
    original = AMPLIFY.prepare_for_inference

    def spy(self, precision="fp32"):
        out = original(self, precision)
        prepared.append(model_precision(out))
        return out

    monkeypatch.setattr(AMPLIFY, "prepare_for_inference", spy)
    out = tmp_path / "r.json"
    assert main(["eval-world", "--model", str(path), "--suite", "builtin_push", "--episodes", "1", "--baselines",
                 "none", "--precision", "bfloat16", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert prepared == ["bf16"] and res["precision"] == "bf16" and res["model"]["episodes"] == 1
    prepared.clear()
    assert main(["eval-world", "--model", str(path), "--suite", "builtin_push", "--episodes", "1", "--baselines",
                 "none", "--json", str(out), "--no-progress"]) == 0
    assert prepared == [] and "precision" not in json.loads(out.read_text())  # default: as loaded
    assert json.loads(out.read_text())["model"]["execute"] == 8  # the bundle records no evaluation: 8 per chunk


def test_eval_world_executes_what_the_bundle_was_evaluated_with(tmp_path, small_bundle):
    import copy

    import torch

    from amplify_cli.main import main
    from world import get_suite

    model = copy.deepcopy(small_bundle)
    names = [t.instruction for t in get_suite("builtin_push")]
    model.set_instructions(names, torch.randn(len(names), model.cfg.forward_dynamics.text_embed_dim))
    model.metadata["evaluation"] = {"execute": 2}  # as `build-default --eval-per-task K --eval-execute 2` records
    path = model.save(tmp_path / "bundle")
    out = tmp_path / "r.json"
    common = ["eval-world", "--model", str(path), "--suite", "builtin_push", "--episodes", "1", "--baselines", "none",
              "--json", str(out), "--no-progress"]
    assert main(common) == 0 and json.loads(out.read_text())["model"]["execute"] == 2
    assert main(common + ["--execute", "4"]) == 0 and json.loads(out.read_text())["model"]["execute"] == 4
    assert json.loads(out.read_text())["model"]["gripper_hold"] == 0  # the bundle names no gripper latch: off
    model.metadata["gripper_hold"] = 4  # as `build-default` records its recipe's
    model.save(tmp_path / "bundle")
    assert main(common) == 0 and json.loads(out.read_text())["model"]["gripper_hold"] == 4
    assert main(common + ["--gripper-hold", "0"]) == 0 and json.loads(out.read_text())["model"]["gripper_hold"] == 0
    assert main(common + ["--gripper-hold", "-1"]) == 2


def test_evaluate_with_a_gripper_hold_runs_the_latched_gripper_command():
    """``evaluate(gripper_hold=h)``: a policy whose gripper flips every call runs a command kept h steps."""
    calls = []

    def policy(images, proprio, instructions):  # gripper -1, +1, -1, ... (> 0 close) call after call
        calls.append(1)
        g = 1.0 if len(calls) % 2 == 0 else -1.0
        return np.broadcast_to(np.array([0, 0, 0, 0, 0, 0, g], np.float32), (len(proprio), 4, 7))
    policy.needs_images = False

    r = evaluate(policy, episodes=1, max_steps=7, progress=False, execute=1, gripper_hold=3)
    assert np.asarray(r["results"][0]["actions"])[:, 6].tolist() == [-1, 1, 1, 1, -1, -1, -1]
    assert r["gripper_hold"] == 3
    free = evaluate(policy, episodes=1, max_steps=4, progress=False, execute=1)
    assert len(set(np.asarray(free["results"][0]["actions"])[:, 6].tolist())) == 2 and free["gripper_hold"] == 0


def test_evaluate_with_temporal_aggregation_runs_the_weighted_mean_of_overlapping_chunks():
    """``evaluate(temporal_agg=m)`` queries every step and runs exp(-m i)-weighted means (i = 0 oldest)."""
    calls = []

    def policy(images, proprio, instructions):  # chunk k (k-th call) predicts 0.1 k + 0.01 j for its step j
        k = len(calls)
        calls.append(k)
        c = (0.1 * k + 0.01 * np.arange(4))[None, :, None]
        return np.broadcast_to(c, (len(proprio), 4, 7)).astype(np.float32)
    policy.needs_images = False

    r = evaluate(policy, episodes=1, max_steps=3, progress=False, temporal_agg=0.5)
    run = np.asarray(r["results"][0]["actions"])[:, 0]  # the first action dimension of the 3 steps run
    w = np.exp(-0.5 * np.arange(3))
    expected = [0.0,  # only chunk 0, its step 0
                (w[0] * 0.01 + w[1] * 0.1) / w[:2].sum(),  # chunk 0 step 1, chunk 1 step 0
                (w[0] * 0.02 + w[1] * 0.11 + w[2] * 0.2) / w.sum()]
    assert len(calls) == 3 and r["execute"] == 1 and r["temporal_agg"] == 0.5
    np.testing.assert_allclose(run, expected, rtol=0, atol=1e-6)
    chunked = evaluate(policy, episodes=1, max_steps=3, progress=False, execute=2)
    assert chunked["policy_calls"] == 2 and chunked["temporal_agg"] is None
