"""Client-side benchmark against a live server: msgpack vs JSON, sequential vs concurrent, and the
tokenizer's concurrency, each pair measured side by side (interleaved) in one run.

    python -m benchmarks.clients --server http://127.0.0.1:8000 [--api-key K] [--repeats 30]
           [--tracks DATASET_ROOT] [--out benchmarks/results/clients.json]

Without ``--tracks`` a small built-in-world track dataset matching the served model's
``num_tracks``/``track_horizon`` is generated in a temporary directory.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import summarize
from clients import AmplifyClient, AsyncAmplifyClient
from clients.codec import JSON, MSGPACK, decode_body, encode_body
from clients.tokenize import tokenize


def _act_inputs(meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = meta["image_size"]
    images = rng.integers(0, 256, (len(meta["views"]), h, w, 3), dtype=np.uint8)
    proprio = rng.standard_normal(meta["proprio_dim"]).astype(np.float32)
    text_emb = rng.standard_normal(meta["text_embedding_dim"]).astype(np.float32)
    return images, proprio, text_emb


def bench_codecs(meta: dict, repeats: int = 200) -> dict:
    """Building an /act body and reading an actions body, msgpack vs JSON (no network)."""
    images, proprio, text_emb = _act_inputs(meta)
    body = {"images": images[None], "proprio": proprio[None], "text_emb": text_emb[None], "sampling": "argmax"}
    actions = {"actions": np.zeros((1, meta["action_horizon"], meta["action_dim"]), np.float32)}
    out = {}
    for name, ct in (("msgpack", MSGPACK), ("json", JSON)):
        enc, dec = [], []
        raw = encode_body(actions, ct)
        for _ in range(repeats):
            t0 = time.perf_counter()
            req = encode_body(body, ct)
            t1 = time.perf_counter()
            decode_body(raw, ct)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
        out[name] = {"request_bytes": len(req), "encode": summarize(enc), "decode": summarize(dec)}
    return out


def bench_act(server: str, api_key: str | None, repeats: int) -> dict:
    """Sequential single-observation /act round trips, msgpack and JSON interleaved call by call."""
    clients = {f: AmplifyClient(server, api_key=api_key, format=f) for f in ("msgpack", "json")}
    meta = clients["msgpack"].metadata()
    images, proprio, text_emb = _act_inputs(meta)
    times: dict[str, list[float]] = {f: [] for f in clients}
    for c in clients.values():  # warm up connections
        c.act(images, proprio, text_emb=text_emb)
    for _ in range(repeats):
        for f, c in clients.items():
            t0 = time.perf_counter()
            c.act(images, proprio, text_emb=text_emb)
            times[f].append(time.perf_counter() - t0)
    for c in clients.values():
        c.close()
    return {f: summarize(t) for f, t in times.items()}


def bench_act_concurrent(server: str, api_key: str | None, total: int, concurrency: int) -> dict:
    """``total`` /act calls with ``concurrency`` in flight (async client): throughput and latency."""
    async def run() -> tuple[float, list[float]]:
        async with AsyncAmplifyClient(server, api_key=api_key) as c:
            meta = await c.metadata()
            images, proprio, text_emb = _act_inputs(meta)
            await c.act(images, proprio, text_emb=text_emb)
            sem, lat = asyncio.Semaphore(concurrency), []

            async def one():
                async with sem:
                    t0 = time.perf_counter()
                    await c.act(images, proprio, text_emb=text_emb)
                    lat.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*[one() for _ in range(total)])
            return time.perf_counter() - t0, lat

    wall, lat = asyncio.run(run())
    return {"calls": total, "concurrency": concurrency, "wall_s": wall, "calls_per_s": total / wall, **summarize(lat)}


def bench_tokenize(server: str, api_key: str | None, tracks: Path, concurrencies: list[int]) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in concurrencies:
            s = asyncio.run(tokenize(server, [tracks], Path(tmp) / f"tok_{c}.hdf5", api_key=api_key,
                                     concurrency=c, batch_size=64, progress=False))
            out[str(c)] = {"windows": s.windows, "seconds": s.seconds, "windows_per_s": s.windows / s.seconds,
                           "requests": s.requests, "mean_request_s": s.request_seconds / max(s.requests, 1)}
    return out


def _make_tracks(meta: dict, root: Path) -> Path:
    from world.generate import generate
    from world.suites import SUITES

    generate("builtin_push", str(root), demos_per_task=5, num_points=int(meta["num_tracks"]),
             horizon=int(meta["track_horizon"]), workers=1, tasks=SUITES["builtin_push"])
    return root


def render(r: dict) -> str:
    ms = lambda s: f"{1000 * s:.2f}"  # noqa: E731
    c, a, cc, t = r["codecs"], r["act"], r["act_concurrent"], r["tokenize"]
    lines = [f"## Clients (server {r['server']}, model {r['model']})", "",
             "| what | msgpack | JSON | JSON / msgpack |", "|---|---|---|---|",
             f"| /act request body bytes | {c['msgpack']['request_bytes']} | {c['json']['request_bytes']} | "
             f"{c['json']['request_bytes'] / c['msgpack']['request_bytes']:.1f}x |",
             f"| build /act body, median ms | {ms(c['msgpack']['encode']['median_s'])} | {ms(c['json']['encode']['median_s'])} | "
             f"{c['json']['encode']['median_s'] / c['msgpack']['encode']['median_s']:.0f}x |",
             f"| /act round trip p50 ms | {ms(a['msgpack']['p50_s'])} | {ms(a['json']['p50_s'])} | "
             f"{a['json']['p50_s'] / a['msgpack']['p50_s']:.2f}x |",
             f"| /act round trip p95 ms | {ms(a['msgpack']['p95_s'])} | {ms(a['json']['p95_s'])} | |",
             f"| /act round trip p99 ms | {ms(a['msgpack']['p99_s'])} | {ms(a['json']['p99_s'])} | |", "",
             "| /act, msgpack | calls/s | p50 ms | p95 ms |", "|---|---|---|---|"]
    for k, v in cc.items():
        lines.append(f"| {v['concurrency']} in flight | {v['calls_per_s']:.2f} | {ms(v['p50_s'])} | {ms(v['p95_s'])} |")
    lines += ["", "| tokenize concurrency | windows/s | mean ms/request |", "|---|---|---|"]
    for k, v in t.items():
        lines.append(f"| {k} | {v['windows_per_s']:.0f} | {ms(v['mean_request_s'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default=None)
    p.add_argument("--repeats", type=int, default=30, help="sequential /act calls per format")
    p.add_argument("--tracks", type=Path, default=None, help="track dataset root (default: generate one)")
    p.add_argument("--out", type=Path, default=None, help="write JSON here (and a .md beside it)")
    a = p.parse_args(argv)
    with AmplifyClient(a.server, api_key=a.api_key) as c:
        meta = c.metadata()
    result = {"server": a.server, "model": meta.get("model"), "codecs": bench_codecs(meta),
              "act": bench_act(a.server, a.api_key, a.repeats),
              "act_concurrent": {str(k): bench_act_concurrent(a.server, a.api_key, 4 * a.repeats // 3, k) for k in (1, 8)}}
    with tempfile.TemporaryDirectory() as tmp:
        tracks = a.tracks or _make_tracks(meta, Path(tmp))
        result["tokenize"] = bench_tokenize(a.server, a.api_key, tracks, [1, 4])
    text = render(result)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")
        a.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
