"""Readers on hand-made files of each layout (exact values), and on the built-in world's files."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from training.data import AmplifyDataset
from training.data.tracks import fill_nan, resample_time

VIEWS = ["agentview", "eye_in_hand"]


def write_layout(root, suite="toy", task="pick_the_thing", demos=(5, 3), horizon=4, n=3):
    """A LIBERO demo file, per-demo track files and a text file, with known contents."""
    (root / suite / "text").mkdir(parents=True)
    tdir = root / suite / "uniform_3_reinit_4" / f"{task}_demo"
    tdir.mkdir(parents=True)
    with h5py.File(root / suite / f"{task}_demo.hdf5", "w") as f:
        for i, T in enumerate(demos):
            g = f.create_group(f"data/demo_{i}")
            g["actions"] = np.arange(T * 7, dtype=np.float64).reshape(T, 7) + 100 * i
            upright = np.zeros((T, 128, 128, 3), np.uint8)
            upright[:, :10] = 255  # a white band at the TOP of the upright image
            g["obs/agentview_rgb"] = upright[:, ::-1]  # stored upside down, as LIBERO does
            g["obs/eye_in_hand_rgb"] = upright[:, ::-1]
            g["obs/joint_states"] = np.ones((T, 7)) * np.arange(T)[:, None]
            g["obs/gripper_states"] = -np.ones((T, 2))
            with h5py.File(tdir / f"demo_{i}.hdf5", "w") as tf:
                for v in VIEWS:
                    tr = np.zeros((T, horizon, n, 2), np.float32)
                    tr[..., 0] = 64 + np.arange(horizon)[None, :, None]  # col moves right by 1 px/step
                    tr[..., 1] = 32  # row fixed
                    if i == 0:
                        tr[0, 1, 0] = np.nan  # a NaN point, filled from the previous step
                    tf[f"root/{v}/tracks"] = tr
    with h5py.File(root / suite / "text" / f"{task}.hdf5", "w") as f:
        f["text_emb"] = np.full(8, 0.5, np.float32)
        f.attrs["instruction"] = "pick the thing"


def test_hand_made_layout(tmp_path):
    write_layout(tmp_path)
    ds = AmplifyDataset(tmp_path, "[toy:traj0.5]", VIEWS, num_tracks=3, track_horizon=4, action_horizon=4, load_images=True)
    assert len(ds.demos) == 1 and len(ds) == 5
    s = ds[3]
    # tracks: (col, row) -> (row, col), normalized (p - 64) / 64
    np.testing.assert_allclose(s["tracks"][0, :, 0, 0].numpy(), (32 - 64) / 64)
    np.testing.assert_allclose(s["tracks"][0, :, 0, 1].numpy(), (64 + np.arange(4) - 64) / 64)
    # NaN at (t=0, step 1, track 0) filled from step 0
    t0 = ds[0]["tracks"]
    assert np.isfinite(t0.numpy()).all()
    np.testing.assert_allclose(t0[0, 1, 0].numpy(), t0[0, 0, 0].numpy())
    # actions t..t+3, padded with the last one
    np.testing.assert_array_equal(s["actions"].numpy(), np.arange(35, dtype=np.float32).reshape(5, 7)[[3, 4, 4, 4]])
    np.testing.assert_array_equal(s["proprio"].numpy(), [3] * 7 + [-1, -1])
    assert s["images"].shape == (2, 128, 128, 3) and s["images"].dtype.is_floating_point is False
    assert s["images"][0, :10].min() == 255 and s["images"][0, 10:].max() == 0  # flipped upright
    names, embs = ds.instruction_table()
    assert names == ["pick the thing"] and embs.shape == (1, 8)
    last = AmplifyDataset(tmp_path, "[toy:traj-0.5]", VIEWS, 3, 4, 4)
    assert [d.key for d in last.demos] == ["demo_1"]


def test_horizon_interpolation(tmp_path):
    write_layout(tmp_path)
    for method in ("linear", "spline"):
        ds = AmplifyDataset(tmp_path, "[toy]", VIEWS, 3, track_horizon=7, action_horizon=2, interp=method)
        col = ds[4]["tracks"][1, :, 2, 1].numpy() * 64  # linear motion 0..3 px over 7 points
        np.testing.assert_allclose(col, np.linspace(0, 3, 7), atol=1e-4)
    with pytest.raises(ValueError, match="interpolation"):
        resample_time(np.zeros((4, 3, 2), np.float32), 7, "cubic")


def test_fill_nan_whole_track_and_leading():
    x = np.full((4, 2, 2), np.nan, np.float32)  # (H, n, 2)
    x[2:, 1] = 5.0
    y = fill_nan(x)
    assert (y[:, 0] == 0).all() and (y[:, 1] == 5).all()


def test_resize_images(tmp_path):
    write_layout(tmp_path)
    ds = AmplifyDataset(tmp_path, "[toy]", VIEWS, 3, 4, 4, image_size=64, load_images=True)
    assert ds[0]["images"].shape == (2, 64, 64, 3)


def test_missing_files_are_named(tmp_path):
    write_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="other"):
        AmplifyDataset(tmp_path, "[other]", VIEWS, 3, 4, 4)
    with pytest.raises(ValueError, match="hold only 3"):
        AmplifyDataset(tmp_path, "[toy]", VIEWS, 5, 4, 4)


def test_world_files(world_root):
    """The built-in world's generator writes exactly the layouts the readers take."""
    ds = AmplifyDataset(world_root, "[builtin_push:traj0.67]", VIEWS, 16, 16, 16, load_images=True)
    val = AmplifyDataset(world_root, "[builtin_push:traj-0.34]", VIEWS, 16, 16, 16)
    assert len(ds.tasks) == 4 and len(ds.demos) == 8 and len(val.demos) == 4
    s = ds[0]
    assert s["tracks"].shape == (2, 16, 16, 2) and s["actions"].shape == (16, 7) and s["proprio"].shape == (9,)
    assert s["text_emb"].shape == (512,) and s["images"].shape == (2, 128, 128, 3)
    # agentview tracks start on the world's uniform grid: first query (col 16, row 16) of 4x4 -> (row, col)
    first = s["tracks"][0, 0, 0].numpy() * 64 + 64
    assert np.allclose(first, [16, 16], atol=0.5)
    names, _ = ds.instruction_table()
    assert "push the red cube to the left edge" in names
