"""A numpy renderer for the tabletop world: two views, 128x128 RGB uint8, plus an id buffer.

Pixel convention (used everywhere in ``world``): an image is UPRIGHT, ``img[row, col]``
with row 0 at the top; pixel (col, row) has its centre at integer coordinates.
(LIBERO-style observations and HDF5 files store the image upside down, ``img[::-1]``;
that flip is applied only in ``env`` / ``generate``.)

Views (both are exact, closed-form projections of a point (X, Y, h) at height h):

* ``agentview``: a fixed oblique camera. ``col = C0 + S (X - 0.5)``,
  ``row = R0 - S KY (Y - 0.5) - S KZ h``: the table seen from the front, lifted things
  rise in the image.
* ``eye_in_hand``: a pinhole camera on the effector looking straight down from
  ``cam = ee + (0, EYE_DY, EYE_DZ)``: ``col = 63.5 + F (X - cx) / d``,
  ``row = 63.5 - F (Y - cy) / d`` with ``d = cz - h``.

For a given height both maps are ``col = ac + bc X``, ``row = ar - br Y`` (no rotation),
which :func:`coeffs` returns; entities are flat shapes at their top height and only
translate, so point tracks follow exactly (see ``world.tracks``).

Entity ids in the id buffer: 0 table (and floor), 1 palm, 2/3 fingers, 4 forearm, 5 + i object i.
The forearm is a strip rising from the back of the palm in agentview (drawn at the palm's height,
so it translates rigidly with the effector and its tracks are exact); like the palm, it is behind
the wrist camera and not drawn in eye_in_hand.
"""
from __future__ import annotations

import numpy as np

from .scene import GRIP_MAX, ObjSpec, Scene

SIZE = 128
VIEWS = ("agentview", "eye_in_hand")
AG_S, AG_KY, AG_KZ, AG_C0, AG_R0 = 118.0, 0.80, 0.90, 63.5, 70.0
EYE_DY, EYE_DZ, EYE_F = 0.05, 0.25, 45.0
N_GRIPPER = 5  # ids before the objects: table, palm, finger, finger, forearm

TABLE_RGB = np.array([196, 170, 132], np.float32)
FLOOR_RGB = np.array([62, 64, 74], np.float32)
GRIPPER_RGB = {1: (150, 150, 158), 2: (70, 70, 78), 3: (70, 70, 78), 4: (118, 118, 128)}
PALM = dict(hx=0.075, hy=0.016, dz=0.06)
FINGER = dict(hx=0.011, hy=0.026, dz=0.035)
FOREARM = dict(hx=0.028, hy=0.22, dz=PALM["dz"])  # a strip behind the palm (agentview only)


def coeffs(view: str, cam: np.ndarray | None, h: np.ndarray | float):
    """(ac, bc, ar, br) of ``col = ac + bc X, row = ar - br Y`` at height h (broadcasts).

    cam: (..., 3) camera position for eye_in_hand (ignored by agentview)."""
    h = np.asarray(h, dtype=np.float64)
    if view == "agentview":
        one = np.ones_like(h)
        return (AG_C0 - 0.5 * AG_S) * one, AG_S * one, AG_R0 + 0.5 * AG_S * AG_KY - AG_S * AG_KZ * h, AG_S * AG_KY * one
    cam = np.asarray(cam, dtype=np.float64)
    k = EYE_F / np.maximum(cam[..., 2] - h, 1e-3)
    return 63.5 - k * cam[..., 0], k, 63.5 + k * cam[..., 1], k


def project(view: str, cam, X, Y, h):
    """World point(s) at height h -> (col, row) pixel coordinates of the upright image."""
    ac, bc, ar, br = coeffs(view, cam, h)
    return ac + bc * X, ar - br * Y


def unproject(view: str, cam, col, row, h):
    """Pixel(s) -> world (X, Y) on the plane at height h."""
    ac, bc, ar, br = coeffs(view, cam, h)
    return (col - ac) / bc, (ar - row) / br


def eye_camera(ee: np.ndarray) -> np.ndarray:
    """(..., 3) effector position -> (..., 3) wrist camera position."""
    return np.asarray(ee, dtype=np.float64) + np.array([0.0, EYE_DY, EYE_DZ])


def entity_table(scene: Scene) -> np.ndarray:
    """(E, 3) centre x, y and top height of every entity (id order), E = 4 + n objects."""
    ee, g = scene.ee, scene.grip
    gap = GRIP_MAX * g + FINGER["hx"]
    out = np.zeros((N_GRIPPER + scene.n, 3))
    out[1] = (ee[0], ee[1], ee[2] + PALM["dz"])
    out[2] = (ee[0] - gap, ee[1], ee[2] + FINGER["dz"])
    out[3] = (ee[0] + gap, ee[1], ee[2] + FINGER["dz"])
    out[4] = (ee[0], ee[1] + PALM["hy"] + FOREARM["hy"], ee[2] + FOREARM["dz"])
    for i, o in enumerate(scene.objects):
        p = scene.pos(i)
        out[N_GRIPPER + i] = (p[0], p[1], p[2] + o.height)
    return out


def _checker(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table colour for world coordinates X (W,) and Y (H,): (H, W, 3) float32, on-table mask."""
    cx = np.floor(X * 10).astype(np.int64)
    cy = np.floor(Y * 10).astype(np.int64)
    chk = ((cx[None, :] + cy[:, None]) & 1).astype(np.float32)  # (H, W)
    on = ((X >= 0) & (X <= 1))[None, :] & ((Y >= 0) & (Y <= 1))[:, None]
    edge = ((X < 0.02) | (X > 0.98))[None, :] | ((Y < 0.02) | (Y > 0.98))[:, None]
    img = TABLE_RGB[None, None] * (0.94 + 0.08 * chk)[..., None]
    img = np.where(edge[..., None], TABLE_RGB * 0.72, img)
    img = np.where(on[..., None], img, FLOOR_RGB)
    return img.astype(np.float32), on


_AG_BG: np.ndarray | None = None


def _background(view: str, cam) -> np.ndarray:
    global _AG_BG
    pix = np.arange(SIZE, dtype=np.float64)
    if view == "agentview":
        if _AG_BG is None:
            X, Y = unproject(view, None, pix, pix, 0.0)
            _AG_BG = _checker(X, Y)[0]
        return _AG_BG.copy()
    X, Y = unproject(view, cam, pix, pix, 0.0)
    return _checker(X, Y)[0]


def _draw(img, ids, view, cam, eid, kind, cx, cy, h, hx, hy, rgb, inner=0.0, shade=True, shadow=False):
    """Paint one flat entity (footprint centred at cx, cy, at height h) into img/ids in place
    (img None: the id buffer only)."""
    ac, bc, ar, br = coeffs(view, cam, h)
    ac, bc, ar, br = float(ac), float(bc), float(ar), float(br)
    c0, c1 = ac + bc * (cx - hx), ac + bc * (cx + hx)
    r0, r1 = ar - br * (cy + hy), ar - br * (cy - hy)
    ci0, ci1 = max(int(np.ceil(c0 - 0.5)), 0), min(int(np.floor(c1 + 0.5)) + 1, SIZE)
    ri0, ri1 = max(int(np.ceil(r0 - 0.5)), 0), min(int(np.floor(r1 + 0.5)) + 1, SIZE)
    if ci0 >= ci1 or ri0 >= ri1:
        return
    dx = (np.arange(ci0, ci1) - ac) / bc - cx  # (w,)
    dy = (ar - np.arange(ri0, ri1)) / br - cy  # (h,)
    if kind == "box":
        mask = (np.abs(dy) <= hy)[:, None] & (np.abs(dx) <= hx)[None, :]
    else:
        r2 = (dy[:, None] ** 2 + dx[None, :] ** 2) / (hx * hx)  # (h, w)
        mask = r2 <= 1.0
    if img is None:  # the id buffer only: shadows draw nothing there
        if not shadow:
            ids[ri0:ri1, ci0:ci1][mask] = eid
        return
    sub = img[ri0:ri1, ci0:ci1]
    if kind == "box":
        border = (np.abs(dy)[:, None] > hy - 0.008) | (np.abs(dx)[None, :] > hx - 0.008)
        col = np.where(border[..., None], np.float32(0.7) * np.asarray(rgb, np.float32), np.asarray(rgb, np.float32))
    else:
        base = np.asarray(rgb, np.float32)
        if kind == "disc":
            hl = ((dx[None, :] + 0.4 * hx) ** 2 + (dy[:, None] - 0.4 * hx) ** 2) / (hx * hx)
            f = (1.0 - 0.35 * r2 + 0.35 * np.exp(-hl * 8.0)).astype(np.float32)
            col = np.clip(base * f[..., None], 0, 255)
        elif kind == "ring":
            rin = (inner / hx) ** 2
            f = np.where(r2 < rin, 0.55, 1.0).astype(np.float32)
            col = base * f[..., None]
        else:  # shadow disc
            col = sub * np.float32(0.72)
    if shadow:
        m = mask & (ids[ri0:ri1, ci0:ci1] == 0)
        sub[m] = sub[m] * np.float32(0.72)
        return
    sub[mask] = col[mask] if col.ndim == 3 else col
    ids[ri0:ri1, ci0:ci1][mask] = eid


def render(scene: Scene, view: str, entities: np.ndarray | None = None,
           rgb: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Render one view: (128, 128, 3) uint8 upright image and (128, 128) int8 entity ids
    (``rgb=False``: None and the same ids; measured 0.23 against 0.44 ms for agentview, 0.10 against 0.85 ms
    for eye_in_hand, whose table is redrawn for every camera pose)."""
    ent = entity_table(scene) if entities is None else entities
    cam = eye_camera(scene.ee) if view == "eye_in_hand" else None
    img = _background(view, cam) if rgb else None
    ids = np.zeros((SIZE, SIZE), np.int8)
    # shadows of raised things on the table
    if view == "agentview":
        _draw(img, ids, view, cam, 0, "disc", ent[1, 0], ent[1, 1], 0.0, 0.03, 0.03, None, shadow=True)
    for i, o in enumerate(scene.objects):
        p = scene.pos(i)
        if p[2] > 0.015:
            _draw(img, ids, view, cam, 0, "disc", p[0], p[1], 0.0, o.half, o.half, None, shadow=True)
    order = np.argsort(ent[:, 2], kind="stable")
    cam_top = cam[2] - 0.01 if cam is not None else np.inf
    for e in order:
        if e == 0 or ent[e, 2] >= cam_top or (e in (1, 4) and view == "eye_in_hand"):
            continue  # the palm and forearm are behind the wrist camera
        cx, cy, h = ent[e]
        if e < N_GRIPPER:
            d = PALM if e == 1 else FOREARM if e == 4 else FINGER
            _draw(img, ids, view, cam, e, "box", cx, cy, h, d["hx"], d["hy"], GRIPPER_RGB[e])
        else:
            o: ObjSpec = scene.objects[e - N_GRIPPER]
            _draw(img, ids, view, cam, e, o.kind, cx, cy, h, o.half, o.half, o.rgb, inner=o.inner)
    return (np.clip(img, 0, 255).astype(np.uint8) if rgb else None), ids
