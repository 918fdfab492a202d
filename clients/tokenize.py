"""Batch tokenization: stream AMPLIFY track files to a server's ``/encode``, write indices to HDF5.

    amplify tokenize --server http://127.0.0.1:8000 --input DATASET_ROOT --output tokens.hdf5
    python -m clients.tokenize ...            # the same, without torch installed

Input: AMPLIFY per-demo track files (``root/<view>/tracks`` (T, H, N, 2), pixel (col, row) of
the upright image), given as files or as directories searched recursively for ``*.hdf5``/``*.h5``.
Each window is converted to normalized (row, col): ``p = (pixel - S/2) / (S/2)`` with S from the
server's ``/metadata`` ``image_size``, and the views are stacked in the server's order -> (T, v, H, N, 2).
Points outside the image (tracks of points that leave the view) are clipped to its border, [-1, 1]
(the contract's range), and counted in the summary; ``--out-of-range error`` refuses them instead.
H and N must equal the model's ``track_horizon`` and ``num_tracks``; with ``--track-subset evenly``
N tracks are picked at evenly spaced positions (``round(linspace(0, N_file - 1, N))``) instead.

Output: one group per demo, ``demos/<relative path without suffix>``, holding ``indices`` (T, S)
int64 (and ``codes`` (T, S, h) float32 with ``--codes``), marked ``complete`` when written: an
interrupted run resumes by skipping complete demos and redoing any partial one. Imports numpy,
httpx, msgpack, h5py and tqdm, never torch.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from clients.client import AsyncAmplifyClient
from clients.errors import AmplifyError

OUTPUT_FORMAT = "amplify-tokens"
OUTPUT_VERSION = 1
_MODEL_KEYS = ("views", "image_size", "track_horizon", "num_tracks", "code_length", "hidden_dim", "codebook_size")


class TokenizeError(Exception):
    """A problem with the inputs, the output file or the served model (message says what to do)."""


@dataclass
class Demo:
    """One track file and its key in the output."""

    path: Path
    key: str
    length: int = 0


def find_demos(inputs: Sequence[str | Path]) -> list[Demo]:
    """Track files under the inputs, each with a unique output key (relative path, no suffix)."""
    demos: dict[str, Demo] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix in (".hdf5", ".h5") and q.is_file())
            pairs = [(f, f.relative_to(p).with_suffix("").as_posix()) for f in files]
        elif p.is_file():
            pairs = [(p, f"{p.parent.name}/{p.stem}")]
        else:
            raise TokenizeError(f"--input {p}: no such file or directory")
        for f, key in pairs:
            if key in demos and demos[key].path != f:
                raise TokenizeError(f"two inputs map to the same demo key {key!r}: {demos[key].path} and {f}")
            demos[key] = Demo(f, key)
    return list(demos.values())


def _is_track_file(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("root"), h5py.Group)
    except OSError:
        return False


def read_tracks(path: Path, meta: dict[str, Any], track_subset: str = "none",
                out_of_range: str = "clip") -> tuple[np.ndarray, int]:
    """A track file -> (normalized (row, col) windows (T, v, H, n, 2) float32 in the model's view order,
    number of points that lay outside the image and were clipped to its border)."""
    views, (img_h, img_w) = list(meta["views"]), meta["image_size"]
    horizon, num_tracks = int(meta["track_horizon"]), int(meta["num_tracks"])
    per_view = []
    with h5py.File(path, "r") as f:
        root = f.get("root")
        if not isinstance(root, h5py.Group):
            raise TokenizeError(f"{path}: not an AMPLIFY track file (no 'root' group)")
        for view in views:
            ds = root.get(f"{view}/tracks")
            if ds is None:
                raise TokenizeError(f"{path}: missing root/{view}/tracks; the model's views are {views}, "
                                    f"the file has {sorted(root.keys())}")
            if ds.ndim != 4 or ds.shape[-1] != 2:
                raise TokenizeError(f"{path}: root/{view}/tracks has shape {ds.shape}, expected (T, H, N, 2)")
            per_view.append(ds[()])
    lengths = {t.shape[0] for t in per_view}
    if len(lengths) != 1:
        raise TokenizeError(f"{path}: views have different numbers of windows {[t.shape[0] for t in per_view]}")
    tracks = np.stack(per_view, axis=1)  # (T, v, H, N, 2) pixel (col, row)
    if tracks.shape[2] != horizon:
        raise TokenizeError(f"{path}: tracks have horizon {tracks.shape[2]}, the model's track_horizon is "
                            f"{horizon} (no resampling in time: regenerate the tracks with that horizon)")
    if tracks.shape[3] != num_tracks:
        if track_subset != "evenly" or tracks.shape[3] < num_tracks:
            hint = "pass --track-subset evenly to pick them at evenly spaced positions" \
                if tracks.shape[3] > num_tracks else "the file has fewer tracks than the model needs"
            raise TokenizeError(f"{path}: {tracks.shape[3]} tracks per view, the model's num_tracks is {num_tracks}; {hint}")
        pick = np.round(np.linspace(0, tracks.shape[3] - 1, num_tracks)).astype(np.int64)
        tracks = tracks[:, :, :, pick]
    half = np.array([img_h, img_w], dtype=np.float64) / 2.0
    points = tracks[..., ::-1].astype(np.float64)  # (col, row) -> (row, col)
    points = (points - half) / half
    if not np.isfinite(points).all():
        raise TokenizeError(f"{path}: tracks hold non-finite values")
    outside = int((np.abs(points) > 1).any(-1).sum())
    if outside and out_of_range == "error":
        raise TokenizeError(f"{path}: {outside} points lie outside the image; pass --out-of-range clip to clip them")
    return np.clip(points, -1.0, 1.0).astype(np.float32), outside


def _model_stamp(meta: dict[str, Any]) -> str:
    """The served model's identity and shapes as canonical JSON: a resumed run must match it."""
    model = meta.get("model", {}) if isinstance(meta.get("model"), dict) else {}
    stamp = {"name": model.get("name"), "version": model.get("version"), **{k: meta.get(k) for k in _MODEL_KEYS}}
    return json.dumps(stamp, sort_keys=True)


def _open_output(path: Path, meta: dict[str, Any], server: str) -> h5py.File:
    out = h5py.File(path, "a")
    stamp = _model_stamp(meta)
    if "format" in out.attrs:
        have = out.attrs.get("model")
        if have != stamp:
            out.close()
            raise TokenizeError(f"{path} was written for a different model ({have} there, {stamp} served now); "
                                "pick another --output or remove it")
    else:
        out.attrs["model"] = stamp
        out.attrs["server"] = server
        out.attrs["format_version"] = OUTPUT_VERSION
        out.attrs["format"] = OUTPUT_FORMAT  # written last: its presence means the header is complete
    out.require_group("demos")
    return out


def _is_complete(out: h5py.File, key: str) -> bool:
    g = out["demos"].get(key)
    return isinstance(g, h5py.Group) and bool(g.attrs.get("complete", False))


@dataclass
class Summary:
    demos_total: int = 0
    demos_done: int = 0
    demos_skipped: int = 0
    points_clipped: int = 0
    windows: int = 0
    requests: int = 0
    request_seconds: float = 0.0
    seconds: float = 0.0

    def text(self) -> str:
        rate = self.windows / self.seconds if self.seconds else 0.0
        mean_ms = 1000 * self.request_seconds / self.requests if self.requests else 0.0
        return (f"tokenized {self.demos_done} demos ({self.windows} windows) in {self.seconds:.2f} s: "
                f"{rate:.1f} windows/s, {self.demos_done / self.seconds if self.seconds else 0:.2f} demos/s, "
                f"{self.requests} requests, mean {mean_ms:.1f} ms/request; "
                f"skipped {self.demos_skipped} already complete of {self.demos_total}; "
                f"{self.points_clipped} points outside the image clipped to its border")


async def tokenize(server: str, inputs: Sequence[str | Path], output: str | Path, *, concurrency: int = 4,
                   batch_size: int = 64, codes: bool = False, api_key: str | None = None, format: str = "msgpack",
                   track_subset: str = "none", out_of_range: str = "clip", progress: bool = True, timeout: float = 120.0,
                   max_demos: int | None = None) -> Summary:
    """Tokenize every demo under ``inputs`` into ``output``; returns the run's :class:`Summary`."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    summary = Summary()
    demos = [d for d in find_demos(inputs) if _is_track_file(d.path)]
    if not demos:
        raise TokenizeError(f"no AMPLIFY track files (HDF5 with a 'root' group) under {list(map(str, inputs))}")
    async with AsyncAmplifyClient(server, api_key=api_key, format=format, timeout=timeout,
                                  max_connections=max(concurrency, 1)) as client:
        meta = await client.metadata()
        out = _open_output(Path(output), meta, server)
        try:
            summary.demos_total = len(demos)
            todo = [d for d in demos if not _is_complete(out, d.key)]
            summary.demos_skipped = len(demos) - len(todo)
            if max_demos is not None:
                todo = todo[:max_demos]
            for d in todo:
                with h5py.File(d.path, "r") as f:
                    d.length = int(f[f"root/{meta['views'][0]}/tracks"].shape[0]) if f"root/{meta['views'][0]}/tracks" in f else 0
            bar = tqdm(total=sum(d.length for d in todo), unit="window", disable=not progress, desc="tokenize")
            requests = asyncio.Semaphore(max(concurrency, 1))
            in_flight = asyncio.Semaphore(max(concurrency, 1) + 1)  # demos held in memory at once

            async def encode(windows: np.ndarray) -> dict[str, np.ndarray]:
                async with requests:
                    t = time.perf_counter()
                    res = await client.encode(windows, return_codes=codes)
                    summary.requests += 1
                    summary.request_seconds += time.perf_counter() - t
                    bar.update(len(windows))
                    return res

            async def one(demo: Demo) -> None:
                async with in_flight:
                    tracks, clipped = read_tracks(demo.path, meta, track_subset, out_of_range)  # (T, v, H, n, 2)
                    summary.points_clipped += clipped
                    parts = await asyncio.gather(*[encode(tracks[i:i + batch_size])
                                                   for i in range(0, len(tracks), batch_size)])
                    if demo.key in out["demos"]:
                        del out["demos"][demo.key]  # a partial write from an interrupted run
                    g = out["demos"].create_group(demo.key)
                    S = int(meta["code_length"])
                    idx = np.concatenate([p["indices"] for p in parts]) if parts else np.zeros((0, S), np.int64)
                    g.create_dataset("indices", data=idx.astype(np.int64))
                    if codes:
                        cod = np.concatenate([p["codes"] for p in parts]) if parts else \
                            np.zeros((0, S, int(meta["hidden_dim"])), np.float32)
                        g.create_dataset("codes", data=cod.astype(np.float32))
                    g.attrs["source"] = str(demo.path)
                    g.attrs["num_windows"] = len(tracks)
                    g.attrs["complete"] = True
                    out.flush()
                    summary.demos_done += 1
                    summary.windows += len(tracks)

            tasks = [asyncio.create_task(one(d)) for d in todo]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                bar.close()
        finally:
            out.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``amplify tokenize``."""
    parser.add_argument("--server", default="http://127.0.0.1:8000", help="the service's base URL (default: %(default)s)")
    parser.add_argument("--input", nargs="+", required=True, help="track files, or dataset roots searched for *.hdf5/*.h5")
    parser.add_argument("--output", required=True, help="HDF5 file to write (resumed when it exists)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per /encode request (default: %(default)s)")
    parser.add_argument("--codes", action="store_true", help="also write the codes (T, S, h)")
    parser.add_argument("--track-subset", choices=["none", "evenly"], default="none",
                        help="when a file has more tracks than the model: 'evenly' picks evenly spaced ones; "
                             "'none' (default) refuses")
    parser.add_argument("--out-of-range", choices=["clip", "error"], default="clip",
                        help="points outside the image: clip to its border (default) or refuse the demo")
    parser.add_argument("--api-key", default=None, help="sent as Authorization: Bearer")
    parser.add_argument("--format", choices=["msgpack", "json"], default="msgpack")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max-demos", type=int, default=None, help="stop after this many demos (then resume later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``amplify tokenize``; prints the throughput summary."""
    try:
        summary = asyncio.run(tokenize(args.server, args.input, args.output, concurrency=args.concurrency,
                                       batch_size=args.batch_size, codes=args.codes, api_key=args.api_key,
                                       format=args.format, track_subset=args.track_subset, out_of_range=args.out_of_range,
                                       progress=not args.no_progress, timeout=args.timeout, max_demos=args.max_demos))
    except (TokenizeError, AmplifyError) as e:
        print(f"amplify tokenize: {e}", file=sys.stderr)
        return 1
    print(summary.text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amplify-tokenize", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
