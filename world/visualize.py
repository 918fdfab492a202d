"""Render an expert episode with its point tracks drawn over both views.

    python -m world.visualize --task push_the_red_cube_to_the_left_edge --out ep.mp4
    python -m world.visualize --task pick_up_the_red_ball --out ep.png   # a grid of frames
    python -m world.visualize --task pick_up_the_red_ball --out ep.gif

Each frame shows agentview | eye_in_hand (upright, upscaled); every query point's future
track (t .. t+horizon-1) is drawn as a line from dark (now) to bright (later); points
that move less than a pixel over the window are drawn as small grey dots; invisible
track steps are skipped.
"""
from __future__ import annotations

import argparse

import imageio.v2 as imageio
import numpy as np

from .generate import rollout
from .render import VIEWS
from .suites import get_task
from .tasks import get_init_states
from .tracks import compute_tracks, uniform_grid


def _line(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, rgb: np.ndarray) -> None:
    n = int(np.ceil(np.abs(p1 - p0).max())) + 1
    pts = np.rint(p0[None] + (p1 - p0)[None] * np.linspace(0, 1, n)[:, None]).astype(int)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < img.shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < img.shape[0])
    img[pts[ok, 1], pts[ok, 0]] = rgb


def draw_tracks(img: np.ndarray, tracks: np.ndarray, vis: np.ndarray, scale: int = 4) -> np.ndarray:
    """Upscale an upright (128,128,3) image and draw tracks (H, N, 2) (col, row) with vis (H, N)."""
    out = img.repeat(scale, 0).repeat(scale, 1).copy()
    H = tracks.shape[0]
    p = (tracks + 0.5) * scale - 0.5  # pixel centres in the upscaled image
    moved = np.abs(tracks - tracks[:1]).max(axis=(0, 2)) >= 1.0
    for n in range(tracks.shape[1]):
        if not vis[0, n]:
            continue
        if not moved[n]:
            c = np.rint(p[0, n]).astype(int)
            out[max(c[1] - 1, 0):c[1] + 1, max(c[0] - 1, 0):c[0] + 1] = (150, 150, 150)
            continue
        for k in range(H - 1):
            if vis[k, n] and vis[k + 1, n]:
                f = (k + 1) / (H - 1)
                _line(out, p[k, n], p[k + 1, n], np.array([255 * f, 255 * (1 - f), 255], np.uint8))
        c = np.rint(p[0, n]).astype(int)
        out[max(c[1] - 2, 0):c[1] + 2, max(c[0] - 2, 0):c[0] + 2] = (255, 0, 255)
    return out


def episode_frames(task_name: str, init: int = 0, seed: int = 0, horizon: int = 16, num_points: int = 400,
                   scale: int = 4) -> list[np.ndarray]:
    """Run the expert on a task's init state; frames (H', W', 3) uint8 of both views with tracks."""
    task = get_task(task_name)
    ep = rollout(task, get_init_states(task)[init], seed=seed)
    q = uniform_grid(num_points)
    tr = {v: compute_tracks(v, ep[f"{v}_ids"], ep["entities"], ep["ee_pos"], horizon, q) for v in VIEWS}
    frames = []
    for t in range(ep["num_steps"]):
        views = [draw_tracks(ep[f"{v}_rgb"][t], tr[v][0][t], tr[v][1][t], scale) for v in VIEWS]
        gap = np.full((views[0].shape[0], 4, 3), 255, np.uint8)
        frames.append(np.concatenate([views[0], gap, views[1]], 1))
    return frames


def replay_frames(task_name: str, init_state: np.ndarray, actions: np.ndarray, scale: int = 2) -> list[np.ndarray]:
    """Replay ``actions`` (T, 7) from ``init_state``: T+1 frames agentview | eye_in_hand, upright, upscaled."""
    from .env import BuiltinEnv

    env = BuiltinEnv(task_name, render=False)
    env.set_init_state(init_state)
    frames = []
    for t in range(len(actions) + 1):
        r = env.render_upright()
        views = [r[v][0].repeat(scale, 0).repeat(scale, 1) for v in VIEWS]
        gap = np.full((views[0].shape[0], 2 * scale, 3), 255, np.uint8)
        frames.append(np.concatenate([views[0], gap, views[1]], 1))
        if t < len(actions):
            env.step(actions[t])
    return frames


def save_frames(frames: list[np.ndarray], out: str, fps: int = 10) -> str:
    """Write frames as .gif (always available) or .mp4 (needs imageio-ffmpeg); returns the path."""
    if out.endswith(".gif"):
        imageio.mimsave(out, frames, duration=1.0 / fps, loop=0)
    else:
        imageio.mimsave(out, frames, fps=fps, macro_block_size=1)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m world.visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="push_the_red_cube_to_the_left_edge")
    p.add_argument("--init", type=int, default=0, help="init state index (0-49)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--num-points", type=int, default=400)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--grid", type=int, default=6, help="frames in a .png grid")
    p.add_argument("--out", required=True, help=".mp4, .gif or .png (grid of frames)")
    a = p.parse_args(argv)
    frames = episode_frames(a.task, a.init, a.seed, a.horizon, a.num_points, a.scale)
    if a.out.endswith(".png"):
        idx = np.linspace(0, len(frames) - 1, a.grid).astype(int)
        rows = [np.concatenate([frames[i] for i in idx[j:j + 2]], 1) for j in range(0, len(idx) - 1, 2)]
        imageio.imwrite(a.out, np.concatenate(rows, 0))
    else:
        save_frames(frames, a.out, a.fps)
    print(f"{len(frames)} frames -> {a.out}")


if __name__ == "__main__":
    main()
