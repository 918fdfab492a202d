"""Demonstrations never start from a benchmark initial state."""
import os

import h5py
import numpy as np
import pytest

from world.suites import SUITES, TASKS
from world.tasks import demo_init_states, get_init_states


def test_demo_stream_never_overlaps_benchmark():
    for name in SUITES["builtin_all"]:
        bench = get_init_states(name)  # (50, D)
        demo = demo_init_states(name, 200)
        assert demo.shape == (200, bench.shape[1])
        d = np.abs(demo[:, None] - bench[None]).max(-1)  # (200, 50) largest coordinate difference
        assert d.min() > 1e-3, name
        np.testing.assert_array_equal(demo, demo_init_states(TASKS[name], 200))  # deterministic
        np.testing.assert_array_equal(demo[:20], demo_init_states(name, 20))  # a prefix of the stream
        other = demo_init_states(name, 20, seed=1)
        assert np.abs(other[:, None] - demo[None, :20]).max(-1).min() > 1e-3  # seeds give other states


def test_generated_demos_start_off_benchmark(tmp_path):
    from world.generate import generate

    names = [SUITES["builtin_push"][0], SUITES["builtin_pick"][0], SUITES["builtin_lift"][0]]
    generate("builtin_all", str(tmp_path), demos_per_task=3, tracks=False, tasks=names)
    for name in names:
        bench = get_init_states(name)
        with h5py.File(os.path.join(tmp_path, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
            for g in f["data"].values():
                init = g.attrs["init_state"][:]
                np.testing.assert_array_equal(init, g["states"][0])
                assert np.abs(bench - init[None]).max(-1).min() > 1e-3


def test_distractor_starts_put_the_effector_above_an_object_the_task_does_not_move():
    """``distractor_starts``: the chosen fraction of demonstration starts (seeded) has the effector, open, above
    a non-target object and clear of its top; the objects stay; the expert still solves the task from there."""
    from world.generate import rollout
    from world.scene import N_EE
    from world.tasks import distractor_starts

    for name in (SUITES["builtin_push"][0], SUITES["builtin_pick"][1], SUITES["builtin_lift"][2]):
        task = TASKS[name]
        states = demo_init_states(name, 60)
        np.testing.assert_array_equal(distractor_starts(name, states, 0.0), states)
        moved = distractor_starts(name, states, 0.5)
        np.testing.assert_array_equal(moved, distractor_starts(task, states, 0.5))  # deterministic
        np.testing.assert_array_equal(moved[:, N_EE:], states[:, N_EE:])  # the objects where they were
        changed = np.flatnonzero(np.abs(moved[:, :3] - states[:, :3]).max(1) > 0)
        assert 15 <= len(changed) <= 45, len(changed)
        objs = moved[:, N_EE:].reshape(len(moved), -1, 3)
        scene = task.new_scene()
        for k in changed:
            d = np.linalg.norm(objs[k, :, :2] - moved[k, None, 0:2], axis=1)
            j = int(d.argmin())
            assert j != task.target and d[j] < 0.08, (name, k, d)
            assert moved[k, 2] > objs[k, j, 2] + scene.objects[j].height + 0.03 and moved[k, 3] == 1.0
        assert all(rollout(task, moved[k], render_images=False)["success"] for k in changed[:3]), name
    with pytest.raises(ValueError, match="fraction"):
        distractor_starts(name, states, 1.5)



def test_shared_starts_give_every_task_of_a_scene_the_same_layouts(tmp_path):
    """``shared_demo_init_states``: tasks of one scene draw the same states (interleaved from each sibling's
    own stream), never one of their benchmark states; the expert solves each sibling from them; ``generate
    --shared-starts`` starts demonstration k of every sibling from the same state and records the stream."""
    from world.generate import generate, rollout
    from world.tasks import shared_demo_init_states

    lift = SUITES["builtin_lift"]
    states = {name: shared_demo_init_states(name, 9) for name in lift}
    for name in lift[1:]:
        np.testing.assert_array_equal(states[name], states[lift[0]])
    by_name = sorted(lift)
    for k in range(3):  # state k comes from sibling k % 3's own stream, in name order
        np.testing.assert_array_equal(states[lift[0]][k], demo_init_states(by_name[k], 3)[0])
    for name in lift:
        assert np.abs(states[name][:, None] - get_init_states(name)[None]).max(-1).min() > 1e-3
        assert all(rollout(TASKS[name], s, render_images=False)["success"] for s in states[name][:3]), name
    push = shared_demo_init_states(SUITES["builtin_push"][0], 3)
    assert push.shape[1] != states[lift[0]].shape[1] or np.abs(push - states[lift[0]][:3]).max() > 0

    generate("builtin_all", str(tmp_path), demos_per_task=2, tracks=False, tasks=lift[:2], shared_starts=True)
    inits = []
    for name in lift[:2]:
        with h5py.File(os.path.join(tmp_path, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
            demos = [f["data"][f"demo_{i}"] for i in range(2)]
            assert all(g.attrs["init_state_source"].startswith("shared_demo_init_states") for g in demos)
            inits.append([(int(g.attrs["init_state_index"]), g.attrs["init_state"][:]) for g in demos])
    for (k0, s0), (k1, s1) in zip(*inits):
        if k0 == k1:  # both experts solved that start: the same layout
            np.testing.assert_array_equal(s0, s1)
