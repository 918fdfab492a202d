"""Demonstrations never start from a benchmark initial state."""
import os

import h5py
import numpy as np

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
