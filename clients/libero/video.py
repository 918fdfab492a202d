"""Episode videos: the camera views side by side with the predicted tracks drawn over them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.uint8)


def query_grid(num_tracks: int) -> np.ndarray:
    """(n, 2) initial points, normalized (row, col): centres of a near-square grid of cells."""
    rows = int(np.floor(np.sqrt(num_tracks)))
    cols = int(np.ceil(num_tracks / rows))
    r, c = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    pts = np.stack([r.ravel(), c.ravel()], -1)[:num_tracks]
    return (pts * 2 - 1).astype(np.float32)


def draw_tracks(image: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Draw tracks (H, n, 2) normalized (row, col) on a copy of ``image`` (h, w, 3) uint8: each track
    a polyline coloured by track, its start marked by a 3x3 dot."""
    out = image.copy()
    h, w = out.shape[:2]
    px = (tracks + 1) / 2 * np.array([h, w])  # (H, n, 2) pixels (row, col)
    for j in range(px.shape[1]):
        color = _PALETTE[j % len(_PALETTE)]
        for a, b in zip(px[:-1, j], px[1:, j]):
            steps = int(max(abs(b - a).max(), 1)) * 2
            seg = a + (b - a) * np.linspace(0, 1, steps + 1)[:, None]
            rr, cc = np.round(seg).astype(int).T
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            out[rr[ok], cc[ok]] = color
        r0, c0 = np.round(px[0, j]).astype(int)
        out[max(r0 - 1, 0):r0 + 2, max(c0 - 1, 0):c0 + 2] = 255
    return out


def frame(images: dict[str, np.ndarray], tracks: np.ndarray | None, views: list[str]) -> np.ndarray:
    """Views side by side (h, w * v, 3); ``tracks`` (v, H, n, 2) drawn per view when given."""
    panels = []
    for i, v in enumerate(views):
        img = images[v]
        panels.append(draw_tracks(img, tracks[i]) if tracks is not None else img)
    return np.concatenate(panels, axis=1)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """Write frames (h, w, 3) uint8 as an H.264 MP4 (imageio + imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
        for f in frames:
            writer.append_data(f)
    return path
