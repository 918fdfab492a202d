"""Sections 2 and 3: the service's overhead over in-process calls, and throughput under concurrency.

Each configuration runs in its own ``amplify serve`` subprocess (:class:`benchmarks.server.Server`);
clients are threads of this process with one ``httpx.Client`` each. The model's own time per call
comes from the server's ``amplify_model_seconds`` histogram, so the per-call overhead (HTTP, codecs,
validation, queueing) is measured on the same calls as the round trips.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx
import numpy as np
import torch

from benchmarks.common import summarize, time_call
from benchmarks.server import Server, histogram
from service.codecs import JSON, MSGPACK, encode_body

ENDPOINTS = ("act", "encode")


def request_fields(meta: dict[str, Any], endpoint: str, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random request fields for ``endpoint`` shaped from the server's ``/metadata``.

    act: images (b, v, H, W, 3) uint8, proprio (b, P), text_emb (b, E); encode: tracks (b, v, T, n, 2) in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    v = len(meta["views"])
    if endpoint == "act":
        h, w = meta["image_size"]
        return {"images": rng.integers(0, 256, (batch, v, h, w, 3), dtype=np.uint8),
                "proprio": rng.standard_normal((batch, meta["proprio_dim"])).astype(np.float32),
                "text_emb": rng.standard_normal((batch, meta["text_embedding_dim"])).astype(np.float32)}
    steps = np.cumsum(rng.normal(0, 0.01, (batch, v, meta["track_horizon"], meta["num_tracks"], 2)), axis=2)
    return {"tracks": (rng.uniform(-0.8, 0.8, (batch, v, 1, meta["num_tracks"], 2)) + steps).clip(-1, 1).astype(np.float32)}


def body(fields: dict[str, np.ndarray], encoding: str) -> tuple[bytes, dict[str, str]]:
    """Request bytes and headers (same encoding asked for the response)."""
    return encode_body(fields, encoding), {"content-type": encoding, "accept": encoding}


def inprocess_call(model: Any, endpoint: str, fields: dict[str, np.ndarray]) -> Callable[[], object]:
    """The in-process computation the server runs for ``fields`` (torch bundle, no HTTP)."""
    from amplify.tracks import points_to_velocities

    if endpoint == "act":
        images = fields["images"].astype(np.float32) / 255.0
        return lambda: model.act(images, fields["proprio"], text_emb=fields["text_emb"])

    def encode() -> object:
        with torch.no_grad():
            return model.motion_tokenizer.tokenize(points_to_velocities(torch.from_numpy(fields["tracks"])))
    return encode


def overhead(server: Server, model: Any, repeats: int = 20) -> dict[str, Any]:
    """Batch-1 round trips per endpoint and encoding vs in-process time and the server's model time."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for endpoint in ENDPOINTS:
            fields = request_fields(server.meta, endpoint)
            row: dict[str, Any] = {"inprocess": time_call(inprocess_call(model, endpoint, fields), repeats=repeats)}
            for encoding in (MSGPACK, JSON):
                data, headers = body(fields, encoding)
                r = client.post(f"/{endpoint}", content=data, headers=headers)  # warm
                r.raise_for_status()
                before = histogram(server.metrics(), "amplify_model_seconds", endpoint)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    r = client.post(f"/{endpoint}", content=data, headers=headers)
                    times.append(time.perf_counter() - t0)
                    r.raise_for_status()
                after = histogram(server.metrics(), "amplify_model_seconds", endpoint)
                model_mean = (after[1] - before[1]) / max(after[0] - before[0], 1)
                s = summarize(times)
                row["msgpack" if encoding == MSGPACK else "json"] = {
                    **s, "server_model_mean_s": model_mean, "overhead_mean_s": s["mean_s"] - model_mean,
                    "request_bytes": len(data), "response_bytes": len(r.content)}
            out[endpoint] = row
    return out


def load(server: Server, endpoint: str, clients: int, requests_per_client: int, encoding: str = MSGPACK) -> dict[str, Any]:
    """``clients`` threads each sending ``requests_per_client`` batch-1 calls: req/s, latency, formed batch size."""
    bodies = [body(request_fields(server.meta, endpoint, seed=k), encoding) for k in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients)

    def client(k: int) -> None:
        data, headers = bodies[k]
        with httpx.Client(base_url=server.url, timeout=600) as c:
            c.get("/health")  # open the connection before the clock starts
            start_gate.wait()
            for _ in range(requests_per_client):
                t0 = time.perf_counter()
                r = c.post(f"/{endpoint}", content=data, headers=headers)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                with lock:
                    latencies.append(dt)

    before = server.metrics()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    after = server.metrics()
    calls, reqs = (a - b for a, b in zip(histogram(after, "amplify_batch_requests", endpoint),
                                         histogram(before, "amplify_batch_requests", endpoint)))
    s = summarize(latencies)
    return {"clients": clients, "requests": len(latencies), "wall_s": wall, "requests_per_s": len(latencies) / wall,
            **s, "model_calls": calls, "mean_batch_requests": reqs / max(calls, 1)}


def concurrency(server: Server, levels: tuple[int, ...] = (1, 4, 16, 64), min_requests: int = 16,
                requests_per_client: int = 2, endpoints: tuple[str, ...] = ENDPOINTS) -> dict[str, Any]:
    """:func:`load` at each concurrency level for each endpoint (warm call first)."""
    out: dict[str, Any] = {}
    for endpoint in endpoints:
        data, headers = body(request_fields(server.meta, endpoint), MSGPACK)
        httpx.post(server.url + f"/{endpoint}", content=data, headers=headers, timeout=600).raise_for_status()
        out[endpoint] = {}
        for n in levels:
            per_client = max(requests_per_client, -(-min_requests // n))
            out[endpoint][str(n)] = load(server, endpoint, n, per_client)
            print(f"  {endpoint} {n} clients: {json.dumps({k: round(v, 4) for k, v in out[endpoint][str(n)].items() if k in ('requests_per_s', 'p50_s', 'p99_s', 'mean_batch_requests')})}",
                  flush=True)
    return out


def server_args(bundle: str, threads: int, device: str) -> list[str]:
    """The ``amplify serve`` arguments every benchmark server shares."""
    return ["--model", bundle, "--backend", "torch", "--threads", str(threads), "--device", device,
            "--log-format", "text", "log_level=warning", "request_timeout_s=3600", "queue_size=4096"]


def run(bundle: str, model: Any, threads: int = 2, device: str = "cpu", repeats: int = 20,
        levels: tuple[int, ...] = (1, 4, 16, 64), min_requests: int = 16, requests_per_client: int = 2,
        max_batch_size: int = 16, sections: tuple[str, ...] = ("overhead", "concurrency")) -> dict[str, Any]:
    """Sections 2 (overhead, on the unbatched server) and 3 (concurrency, batching off then on)."""
    from benchmarks.server import server_env

    out: dict[str, Any] = {"max_batch_size": max_batch_size, "max_wait_ms": 5.0, "server_threads": threads,
                           "server_OMP_WAIT_POLICY": server_env()["OMP_WAIT_POLICY"]}
    torch.set_num_threads(threads)  # in-process comparisons run with the server's thread count
    common = server_args(bundle, threads, device)
    with Server(*common, "--max-batch-size", "1") as server:
        if "overhead" in sections:
            print("service overhead (batch 1, unbatched server)", flush=True)
            out["overhead"] = overhead(server, model, repeats)
        if "concurrency" in sections:
            print("concurrency, batching off", flush=True)
            out["unbatched"] = concurrency(server, levels, min_requests, requests_per_client)
    if "concurrency" in sections:
        with Server(*common, "--max-batch-size", str(max_batch_size), "--max-wait-ms", "5") as server:
            print(f"concurrency, batching on (max_batch_size={max_batch_size})", flush=True)
            out["batched"] = concurrency(server, levels, min_requests, requests_per_client)
    return out
