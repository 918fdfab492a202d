"""amplify tokenize against a live server: equals in-process encoding, resumes without redoing
finished demos, refuses tracks that do not fit the model."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from amplify import AMPLIFY, points_to_velocities
from clients.tokenize import TokenizeError, read_tracks, tokenize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Built-in-world demos with AMPLIFY track files: 16 tracks, horizon 16 (the small model's)."""
    from world.generate import generate
    from world.suites import SUITES

    root = tmp_path_factory.mktemp("tracks")
    generate("builtin_push", str(root), demos_per_task=2, num_points=16, horizon=16, workers=1,
             tasks=SUITES["builtin_push"][:2])
    return root


def _in_process_indices(policy: AMPLIFY, path) -> np.ndarray:
    """Reference: the track file normalized by hand and tokenized by the motion tokenizer in-process."""
    mt = policy.motion_tokenizer
    with h5py.File(path, "r") as f:
        px = np.stack([f["root/agentview/tracks"][()], f["root/eye_in_hand/tracks"][()]], 1)  # (T, v, H, N, 2) (col, row)
    pts = np.clip((px[..., ::-1] - 64.0) / 64.0, -1, 1)  # (row, col) in [-1, 1], image 128x128, clipped
    with torch.no_grad():
        _, idx = mt.tokenize(points_to_velocities(torch.from_numpy(pts.astype(np.float32)), time_dim=2))
    return idx.numpy()


def test_tokenize_matches_in_process_encoding_and_resumes(server, local_policy, dataset, tmp_path):
    out = tmp_path / "tokens.hdf5"
    first = asyncio.run(tokenize(server.url, [dataset], out, api_key=server.api_key, concurrency=3, batch_size=8,
                                 codes=True, progress=False, max_demos=2))
    assert first.demos_done == 2 and first.demos_total == 4 and first.demos_skipped == 0
    with h5py.File(out, "r") as f:
        done_first = sorted(k for k, g in _demo_groups(f) if g.attrs["complete"])
        # simulate an interruption in the middle of writing a third demo: a group that is not complete
        assert len(done_first) == 2
    with h5py.File(out, "a") as f:
        all_keys = sorted(str(p.relative_to(dataset).with_suffix("")) for p in dataset.rglob("demo_*.hdf5"))
        partial = next(k for k in all_keys if k not in done_first)
        f["demos"].create_group(partial).create_dataset("indices", data=np.zeros((1, 15), np.int64))

    env = {**os.environ, "PYTHONPATH": str(server.repo)}
    cmd = [sys.executable, "-m", "amplify", "tokenize", "--server", server.url, "--api-key", server.api_key,
           "--input", str(dataset), "--output", str(out), "--codes", "--concurrency", "2", "--batch-size", "16",
           "--no-progress"]
    res = subprocess.run(cmd, cwd=server.repo, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "tokenized 2 demos" in res.stdout and "skipped 2 already complete of 4" in res.stdout, res.stdout
    assert "windows/s" in res.stdout

    with h5py.File(out, "r") as f:
        groups = dict(_demo_groups(f))
        assert sorted(groups) == all_keys and all(g.attrs["complete"] for g in groups.values())
        for key, g in groups.items():
            ref = _in_process_indices(local_policy, dataset / f"{key}.hdf5")
            assert g["indices"].shape == ref.shape and np.array_equal(g["indices"][()], ref), key
            assert g["codes"].shape == (*ref.shape, 64)


def _demo_groups(f: h5py.File):
    found = []
    f["demos"].visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Group) and
                          ("indices" in obj) else None)
    return found


def test_tracks_that_do_not_fit_the_model_are_refused(tmp_path):
    meta = {"views": ["agentview", "eye_in_hand"], "image_size": [128, 128], "track_horizon": 16, "num_tracks": 16}
    path = tmp_path / "demo_0.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for v in meta["views"]:
            f.create_dataset(f"root/{v}/tracks", data=rng.uniform(0, 127, (5, 16, 25, 2)).astype(np.float32))
    with pytest.raises(TokenizeError, match="25 tracks per view.*num_tracks is 16.*--track-subset evenly"):
        read_tracks(path, meta)
    picked, clipped = read_tracks(path, meta, track_subset="evenly")
    assert clipped == 0 and picked.shape == (5, 2, 16, 16, 2) and np.abs(picked).max() <= 1
    with pytest.raises(TokenizeError, match="horizon 16, the model's track_horizon is 8"):
        read_tracks(path, {**meta, "track_horizon": 8})
    with pytest.raises(TokenizeError, match="missing root/wrist/tracks"):
        read_tracks(path, {**meta, "views": ["agentview", "wrist"]})
    with h5py.File(path, "a") as f:
        f["root/eye_in_hand/tracks"][0, 0, 0] = [200.0, -5.0]  # outside a 128x128 image
    with pytest.raises(TokenizeError, match="1 points lie outside"):
        read_tracks(path, meta, "evenly", out_of_range="error")
    clipped_tracks, n = read_tracks(path, meta, "evenly")
    assert n == 1 and np.array_equal(clipped_tracks[0, 1, 0, 0], [-1.0, 1.0])
    # pixel (col, row) -> normalized (row, col)
    with h5py.File(path, "r") as f:
        col_row = f["root/agentview/tracks"][0, 0, 0]
    row_col = read_tracks(path, {**meta, "image_size": [128, 256]}, "evenly")[0][0, 0, 0, 0]
    np.testing.assert_allclose(row_col, [(col_row[1] - 64) / 64, (col_row[0] - 128) / 128], rtol=1e-6)
