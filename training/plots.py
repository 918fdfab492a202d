"""Figures a person looks at: loss curves from the CSV log, and tracks drawn over the image."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amplify.tracks import unnormalize_points  # noqa: E402


def plot_log(log_csv: Path, out_png: Path, title: str = "") -> None:
    """Train loss (and every other train metric with 'loss' in its name) and validation metrics vs step."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    with open(log_csv) as f:
        for r in csv.DictReader(f):
            series[(r["split"], r["metric"])].append((int(r["step"]), float(r["value"])))
    val_keys = sorted(k for k in series if k[0] == "val")
    n = 1 + len(val_keys)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    ax = axes[0, 0]
    for key in sorted(k for k in series if k[0] == "train" and "loss" in k[1]):
        s, v = zip(*series[key])
        ax.plot(s, v, label=f"train {key[1]}")
    for key in val_keys:
        if "loss" in key[1]:
            s, v = zip(*series[key])
            ax.plot(s, v, "o-", label=f"val {key[1]}")
    ax.set_xlabel("step"), ax.set_title(f"{title} loss"), ax.legend(fontsize=7)
    for i, key in enumerate(val_keys, start=1):
        a = axes[i // cols, i % cols]
        s, v = zip(*series[key])
        a.plot(s, v, "o-")
        a.set_title(f"val {key[1]}", fontsize=9), a.set_xlabel("step")
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def plot_tracks(images: np.ndarray, true_tracks: np.ndarray, pred_tracks: np.ndarray, views: list[str],
                img_size: list[int], out_png: Path, title: str = "") -> None:
    """Images (k, v, S, S, 3) uint8 with true (green) and predicted (red) tracks (k, v, H, n, 2),
    normalized (row, col); a dot marks each track's start."""
    k, v = images.shape[:2]
    fig, axes = plt.subplots(k, v, figsize=(3.2 * v, 3.2 * k), squeeze=False)
    scale = images.shape[2] / float(img_size[0])
    for i in range(k):
        for j in range(v):
            ax = axes[i, j]
            ax.imshow(images[i, j])
            for tracks, color in ((true_tracks, "lime"), (pred_tracks, "red")):
                px = unnormalize_points(np.asarray(tracks[i, j], dtype=np.float32), img_size) * scale  # (H, n, 2) (row, col)
                for p in range(px.shape[1]):
                    ax.plot(px[:, p, 1], px[:, p, 0], color=color, linewidth=0.8, alpha=0.8)
                ax.scatter(px[0, :, 1], px[0, :, 0], s=3, color=color)
            ax.set_xlim(0, images.shape[3]), ax.set_ylim(images.shape[2], 0)
            ax.set_title(f"{views[j]} (green true, red predicted)", fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def plot_actions(true: np.ndarray, pred: np.ndarray, out_png: Path, title: str = "") -> None:
    """One sample's action chunk (A, d): true (solid) vs predicted (dashed) per dimension."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for d in range(true.shape[1]):
        line, = ax.plot(true[:, d], label=f"a{d}")
        ax.plot(pred[:, d], "--", color=line.get_color())
    ax.set_xlabel("step in chunk"), ax.set_title(title), ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
