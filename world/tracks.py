"""Exact 2-D point tracks from the renderer's geometry.

Coordinates are PIXELS in (col, row) order in the 128x128 UPRIGHT image (row 0 at the
top of the upright image; pixel centres at integers), i.e. ``tracks[..., 0]`` is the
column (x) and ``tracks[..., 1]`` the row (y).  The stored HDF5 images are upside down;
to draw a track on a stored frame use ``row_stored = 127 - row``.

For each start step t the query points are re-initialised on a uniform grid and followed
for ``horizon`` frames t .. t+horizon-1 (past the episode end the last frame repeats):
the entity under each query pixel at frame t (id buffer) gives the point's offset on
that entity's top face; the point is then re-projected with the entity's (and, for the
wrist view, the camera's) later pose.  Table points stay put in agentview and move with
the camera in eye_in_hand; points on objects and fingers move with them.  ``vis`` is
true when the re-projected pixel is in the image and shows the same entity.
"""
from __future__ import annotations

import numpy as np

from .render import SIZE, eye_camera, project, unproject


def uniform_grid(num_points: int = 400, size: int = SIZE) -> np.ndarray:
    """(N, 2) float32 (col, row) query points: centres of a sqrt(N) x sqrt(N) grid of cells."""
    n = int(round(np.sqrt(num_points)))
    assert n * n == num_points, "num_points must be a square"
    c = (np.arange(n) + 0.5) * size / n - 0.5
    cc, rr = np.meshgrid(c, c)  # row-major: rows of the grid vary slowest
    return np.stack([cc.ravel(), rr.ravel()], -1).astype(np.float32)


def compute_tracks(view: str, ids: np.ndarray, entities: np.ndarray, ee: np.ndarray,
                   horizon: int = 16, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tracks of one view of one episode.

    ids: (T, 128, 128) int entity ids; entities: (T, E, 3) centre x, y, top height;
    ee: (T, 3) effector positions (wrist camera pose); queries: (N, 2) (col, row).
    Returns tracks (T, horizon, N, 2) float32 (col, row) and vis (T, horizon, N) bool.
    """
    T = ids.shape[0]
    q = uniform_grid() if queries is None else np.asarray(queries, np.float64)
    qc, qr = q[:, 0].astype(np.float64), q[:, 1].astype(np.float64)
    ci = np.clip(np.rint(qc).astype(np.int64), 0, SIZE - 1)
    ri = np.clip(np.rint(qr).astype(np.int64), 0, SIZE - 1)
    cams = eye_camera(ee) if view == "eye_in_hand" else np.zeros((T, 3))
    tt = np.arange(T)
    e = ids[:, ri, ci].astype(np.int64)  # (T, N) entity under each query
    cen = entities[tt[:, None], e]  # (T, N, 3)
    X, Y = unproject(view, cams[:, None, :], qc[None], qr[None], cen[..., 2])  # (T, N)
    lx, ly = X - cen[..., 0], Y - cen[..., 1]  # offset on the entity (table: entity 0 at the origin)
    fi = np.minimum(tt[:, None] + np.arange(horizon)[None], T - 1)  # (T, H)
    c2 = entities[fi[:, :, None], e[:, None, :]]  # (T, H, N, 3)
    col, row = project(view, cams[fi][:, :, None, :], c2[..., 0] + lx[:, None], c2[..., 1] + ly[:, None], c2[..., 2])
    tracks = np.stack([col, row], -1).astype(np.float32)  # (T, H, N, 2)
    rc, rr = np.rint(col).astype(np.int64), np.rint(row).astype(np.int64)
    inside = (rc >= 0) & (rc < SIZE) & (rr >= 0) & (rr < SIZE)
    seen = ids[fi[:, :, None], np.clip(rr, 0, SIZE - 1), np.clip(rc, 0, SIZE - 1)] == e[:, None, :]
    return tracks, inside & seen
