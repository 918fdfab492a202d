"""AMPLIFY track files and their preprocessing.

Layout: ``<root>/<suite>/<track_method>/<task>_demo/demo_<i>.hdf5`` with ``root/<view>/tracks``
(T, horizon, N, 2) in pixel (col, row) order of the upright image, one window per start step, and
optionally ``root/<view>/vis`` (T, horizon, N).

Preprocessing to the models' convention (see amplify/tracks.py): (col, row) -> (row, col), NaN
filled from the nearest valid time in the same track (0, the image centre, if none), normalized to
[-1, 1] by ``p = (pixel - S/2) / (S/2)``, a subset of ``num_tracks`` evenly spaced tracks, and time
resampled (linear or cubic spline) when the prediction horizon differs from the stored one.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy.interpolate import CubicSpline

from amplify.tracks import normalize_pixels


def track_dir(root: str | Path, suite: str, track_method: str, task: str) -> Path:
    return Path(root) / suite / track_method / f"{task}_demo"


def find_track_method(root: str | Path, suite: str) -> str:
    """The single track folder of a suite (e.g. ``uniform_400_reinit_16``); an error if none or several."""
    d = Path(root) / suite
    methods = sorted(p.name for p in d.iterdir() if p.is_dir() and p.name != "text" and any(p.glob("*_demo")))
    if len(methods) != 1:
        raise FileNotFoundError(
            f"{d}: expected exactly one track folder, found {methods or 'none'}; set data.track_method"
        )
    return methods[0]


def read_tracks(path: str | Path, views: list[str]) -> np.ndarray:
    """Raw tracks of a demo: (T, v, horizon, N, 2) float32, pixel (col, row)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"track file not found: {path}")
    with h5py.File(path, "r") as f:
        per_view = []
        for v in views:
            key = f"root/{v}/tracks"
            if key not in f:
                raise KeyError(f"{path}: no dataset {key!r} (views present: {list(f['root'].keys())})")
            per_view.append(np.asarray(f[key], dtype=np.float32))
    return np.stack(per_view, axis=1)


def fill_nan(tracks: np.ndarray, time_axis: int = -3) -> np.ndarray:
    """Replace NaN points by the nearest earlier valid point of the same track, then the nearest
    later one; tracks with no valid point become 0. Shape kept (..., H, N, 2)."""
    x = np.moveaxis(np.array(tracks, dtype=np.float32), time_axis, 0)  # (H, ..., N, 2)
    bad = ~np.isfinite(x).all(-1, keepdims=True)
    if not bad.any():
        return np.moveaxis(x, 0, time_axis)
    for t in range(1, x.shape[0]):  # forward fill
        x[t] = np.where(bad[t] & ~bad[t - 1], x[t - 1], x[t])
        bad[t] = bad[t] & bad[t - 1]
    for t in range(x.shape[0] - 2, -1, -1):  # backward fill
        x[t] = np.where(bad[t] & ~bad[t + 1], x[t + 1], x[t])
        bad[t] = bad[t] & bad[t + 1]
    x = np.where(bad, 0.0, x)
    return np.moveaxis(x.astype(np.float32), 0, time_axis)


def resample_time(tracks: np.ndarray, horizon: int, method: str = "linear", time_axis: int = -3) -> np.ndarray:
    """Resample ``tracks`` (..., H, N, 2) to ``horizon`` points over the same time span."""
    h0 = tracks.shape[time_axis]
    if h0 == horizon:
        return tracks
    src = np.linspace(0.0, 1.0, h0)
    dst = np.linspace(0.0, 1.0, horizon)
    x = np.moveaxis(tracks, time_axis, 0)
    if method == "spline":
        out = CubicSpline(src, x, axis=0)(dst)
    elif method == "linear":
        i = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, h0 - 2)
        w = ((dst - src[i]) / (src[i + 1] - src[i])).reshape(-1, *([1] * (x.ndim - 1)))
        out = x[i] * (1 - w) + x[i + 1] * w
    else:
        raise ValueError(f"interpolation must be 'linear' or 'spline', got {method!r}")
    return np.moveaxis(out.astype(np.float32), 0, time_axis)


def select_tracks(num_stored: int, num_tracks: int) -> np.ndarray:
    """Indices of ``num_tracks`` evenly spaced tracks among ``num_stored``."""
    if num_tracks > num_stored:
        raise ValueError(f"the model takes {num_tracks} tracks but the files hold only {num_stored}")
    return np.linspace(0, num_stored - 1, num_tracks).round().astype(np.int64)


def preprocess_tracks(raw: np.ndarray, img_size: list[int], num_tracks: int, horizon: int,
                      interp: str = "linear") -> np.ndarray:
    """Raw (..., H0, N, 2) pixel (col, row) -> model tracks (..., horizon, num_tracks, 2) in [-1, 1] (row, col)."""
    x = raw[..., select_tracks(raw.shape[-2], num_tracks), :][..., ::-1]  # (col, row) -> (row, col)
    x = fill_nan(x)
    x = normalize_pixels(np.ascontiguousarray(x, dtype=np.float32), img_size)
    return resample_time(x, horizon, interp)
