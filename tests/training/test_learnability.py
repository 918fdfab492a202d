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


def test_perception_bound_feeds_the_views_and_an_exact_estimate_changes_nothing():
    """The perceived-state path: the estimator gets both rendered views of the step (upright, as the
    policy sees them); an estimator that returns the true state reproduces the exact-state run, one
    that misplaces the objects does worse."""
    import numpy as np

    from training.perception_bound import misplacing, perceiving
    from world import get_suite

    torch.set_num_threads(1)
    x, y, _ = demonstrations("builtin_lift", demos_per_task=8)
    model = train(x, y, steps=600, seed=0)
    names = [t.name for t in get_suite("builtin_lift")]

    class Oracle:  # returns the true state of the envs it is shown, optionally with the objects moved
        def __init__(self, shift: float):
            self.shift, self.envs, self.calls = shift, [], 0

        def estimate(self, images, ee=None, objects=None):
            env = self.envs[0]
            assert images.shape == (len(self.envs), 2, 128, 128, 3) and images.dtype == np.uint8
            assert np.array_equal(images[0, 0], env.get_obs(images=True)["agentview_image"][::-1])
            assert np.array_equal(images[0, 1], env.get_obs(images=True)["robot0_eye_in_hand_image"][::-1])
            self.calls += 1
            s = np.stack([e.scene.get_state() for e in self.envs])
            s[:, 8::3] += self.shift
            return s

    def run(shift: float) -> dict:
        oracle = Oracle(shift)
        observe = perceiving(oracle, names, "objects")

        def watch(envs):
            oracle.envs = envs
            return observe(envs)

        res = closed_loop(model.act, "builtin_lift", per_task=3, observe=watch)
        assert oracle.calls > 0
        return res

    exact = closed_loop(model.act, "builtin_lift", per_task=3)
    assert run(0.0) == exact
    assert run(0.15)["successes"] < exact["successes"]
    assert closed_loop(model.act, "builtin_lift", per_task=3, observe=misplacing(names, 0.0)) == exact
    assert closed_loop(model.act, "builtin_lift", per_task=3, observe=misplacing(names, 0.15))["successes"] < exact["successes"]


def test_misplacing_fixes_its_error_per_episode_or_draws_it_every_step():
    """``misplacing``: a bias kept for the whole episode, or (``per_step``) a fresh error every step."""
    import numpy as np

    from training.perception_bound import misplacing
    from world import BuiltinEnv, get_suite

    task = get_suite("builtin_lift")[0]
    names = [task.name]
    env = BuiltinEnv(task, render=False)
    env.set_init_state(env.get_init_states()[0])
    exact = misplacing(names, 0.0)([env])
    fixed, jitter = misplacing(names, 0.05), misplacing(names, 0.05, per_step=True)
    first, second = fixed([env]), fixed([env])
    assert np.array_equal(first, second) and not np.array_equal(first, exact)
    first, second = jitter([env]), jitter([env])
    assert not np.array_equal(first, second) and not np.array_equal(first, exact)
    assert np.array_equal(misplacing(names, 0.0, per_step=True)([env]), exact)
