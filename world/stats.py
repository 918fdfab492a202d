"""Motion statistics of expert demonstrations, per view: does the motion fit the MT's relative grid?

    python -m world.stats [--suite builtin_all] [--demos-per-task 5] [--num-points 400] [--grid 15]

Runs the expert from demonstration init states (never the benchmark's), computes the exact tracks
(re-initialised every step, horizon H) and reports, per view, over consecutive steps of every track
window (what the motion tokenizer's relative-class targets see):

* the per-step displacement of points inside the image (mean, p90, p99, in pixels of the
  128 px image, the tracks' resolution);
* the fraction of moving point-steps (|displacement| >= 0.5 px) whose rounded displacement fits the
  grid (|dcol|, |drow| <= grid // 2), and the fraction of all point-steps that move;
* the fraction of points that leave the image (or get hidden) within a window.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .generate import rollout
from .render import VIEWS
from .suites import SUITES, get_task
from .tasks import demo_init_states
from .tracks import compute_tracks, uniform_grid


def view_motion(tracks: np.ndarray, vis: np.ndarray, grid: int = 15, size: int = 128) -> dict[str, np.ndarray]:
    """Per-step displacements of one view's windows: tracks (T, H, N, 2), vis (T, H, N) -> arrays.

    Point-steps are counted where the point is inside the image at the first of the two steps.
    Returns ``disp`` (K,) euclidean px, ``fits`` (K,) bool: the motion tokenizer's target (both
    positions clamped to the image and rounded, then differenced) is within +-grid // 2 on both
    axes, so it is not clamped by the grid; ``lost`` (T, N) bool: visible at the window's start,
    hidden or off-image at some later step of the window."""
    inside = ((tracks > -0.5) & (tracks < size - 0.5)).all(-1)[:, :-1]  # (T, H-1, N)
    d = tracks[:, 1:] - tracks[:, :-1]  # (T, H-1, N, 2)
    px = np.rint(np.clip(tracks, 0, size - 1))
    dr = px[:, 1:] - px[:, :-1]
    return {"disp": np.linalg.norm(d, axis=-1)[inside], "fits": (np.abs(dr) <= grid // 2).all(-1)[inside],
            "lost": vis[:, 0] & ~vis.all(1)}


def motion_stats(suite: str = "builtin_all", demos_per_task: int = 5, num_points: int = 400, horizon: int = 16,
                 grid: int = 15, seed: int = 0) -> dict:
    """Expert episodes from demonstration init states -> per-view motion statistics (see module doc)."""
    acc: dict[str, dict[str, list]] = {v: {"disp": [], "fits": [], "lost": []} for v in VIEWS}
    q = uniform_grid(num_points)
    steps = ok = 0
    for name in SUITES[suite]:
        task = get_task(name)
        for k, init in enumerate(demo_init_states(task, demos_per_task, seed)):
            ep = rollout(task, init, seed=seed * 100003 + k)
            ok += int(ep["success"])
            steps += ep["num_steps"]
            for v in VIEWS:
                tr, vis = compute_tracks(v, ep[f"{v}_ids"], ep["entities"], ep["ee_pos"], horizon, q)
                for key, val in view_motion(tr, vis, grid).items():
                    acc[v][key].append(val.ravel())
    out: dict = {"episodes": len(SUITES[suite]) * demos_per_task, "successes": ok, "steps": steps,
                 "num_points": num_points, "grid": grid}
    for v in VIEWS:
        disp = np.concatenate(acc[v]["disp"])
        fits = np.concatenate(acc[v]["fits"])
        moving = disp >= 0.5
        out[v] = {"mean_px": float(disp.mean()), "p90_px": float(np.percentile(disp, 90)),
                  "p99_px": float(np.percentile(disp, 99)),
                  "moving_mean_px": float(disp[moving].mean()) if moving.any() else 0.0,
                  "moving_fraction": float(moving.mean()),
                  "moving_fit_fraction": float(fits[moving].mean()) if moving.any() else 1.0,
                  "fit_fraction": float(fits.mean()),
                  "lost_in_window": float(np.concatenate(acc[v]["lost"]).mean())}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m world.stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="builtin_all", choices=sorted(SUITES))
    p.add_argument("--demos-per-task", type=int, default=5)
    p.add_argument("--num-points", type=int, default=400)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--grid", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    st = motion_stats(a.suite, a.demos_per_task, a.num_points, a.horizon, a.grid, a.seed)
    print(f"{st['episodes']} expert episodes ({st['successes']} successes, {st['steps']} steps), "
          f"{a.num_points} points, horizon {a.horizon}, grid {a.grid}x{a.grid} (+-{a.grid // 2} px)")
    for v in VIEWS:
        s = st[v]
        print(f"{v:>12}: per-step motion mean {s['mean_px']:.2f} px (moving points {s['moving_mean_px']:.2f}), "
              f"p90 {s['p90_px']:.2f}, p99 {s['p99_px']:.2f}; moving point-steps {s['moving_fraction']:.1%}, "
              f"of which {s['moving_fit_fraction']:.1%} fit the grid; lost within a window {s['lost_in_window']:.1%}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
