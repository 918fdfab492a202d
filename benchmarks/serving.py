"""Sections 2 and 3: the service's overhead over in-process calls, and throughput under concurrency.

Each configuration runs in its own ``amplify serve`` subprocess (:class:`benchmarks.server.Server`);
clients are threads of this process with one ``httpx.Client`` each. Section 3 is a closed-loop,
steady-state measurement (:func:`load`): every client sends back to back, and only completions inside
a window that opens after each client's first request are counted. The model's own time per call
comes from the server's ``amplify_model_seconds`` histogram, so the per-call overhead (HTTP, codecs,
validation, queueing) is measured on the same calls as the round trips.
"""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import torch

from benchmarks.common import summarize, time_call
from benchmarks.server import Server, histogram
from service.codecs import JSON, MSGPACK, encode_body

ENDPOINTS = ("act", "encode")
DEFAULT_DURATIONS = {"act": 15.0, "encode": 5.0}  # window seconds per endpoint (an /act batch of 16 takes ~2 s)


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


def overhead(server: Server, model: Any, repeats: int = 20, model_threads: int = 1) -> dict[str, Any]:
    """Batch-1 round trips per endpoint and encoding vs in-process time and the server's model time;
    ``model_threads``: the server's intra-op threads (for the CPU it spends around the model)."""
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
                cpu_before = thread_cpu_seconds(server.proc.pid)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    r = client.post(f"/{endpoint}", content=data, headers=headers)
                    times.append(time.perf_counter() - t0)
                    r.raise_for_status()
                cpu_total, cpu_outside = server_cpu_split(cpu_before, thread_cpu_seconds(server.proc.pid), model_threads)
                after = histogram(server.metrics(), "amplify_model_seconds", endpoint)
                model_mean = (after[1] - before[1]) / max(after[0] - before[0], 1)
                s = summarize(times)
                row["msgpack" if encoding == MSGPACK else "json"] = {
                    **s, "server_model_mean_s": model_mean, "overhead_mean_s": s["mean_s"] - model_mean,
                    "server_cpu_s_per_request": cpu_total / repeats,
                    "server_cpu_outside_model_thread_s_per_request": cpu_outside / repeats,
                    "request_bytes": len(data), "response_bytes": len(r.content)}
            out[endpoint] = row
    return out


@dataclass
class Completion:
    """One request of one closed-loop client: when it was sent and when its response was read."""

    client: int
    sent: float  # time.perf_counter()
    done: float  # time.perf_counter()


def window_close(done: list[float], open_s: float, duration_s: float, min_requests: int,
                 deadline_s: float) -> tuple[float, str | None]:
    """When the measurement window opened at ``open_s`` closes, and a note when it closed early.

    Normally ``open_s + duration_s``; later if fewer than ``min_requests`` completions (times in ``done``)
    fall in ``(open_s, open_s + duration_s]``: then at the ``min_requests``-th completion after ``open_s``.
    The safety limit ``deadline_s`` caps that: the window then closes at ``deadline_s`` (or at the first
    completion after ``open_s`` when the warm-up itself ran past ``deadline_s``), with a note.
    """
    after = sorted(t for t in done if t > open_s)
    target = open_s + duration_s
    if sum(t <= target for t in after) >= min_requests:
        return target, None
    if len(after) >= min_requests and after[min_requests - 1] <= deadline_s:
        return after[min_requests - 1], None
    close = max(deadline_s, after[0]) if after else max(deadline_s, open_s)
    n = sum(t <= close for t in after)
    return close, (f"max_s reached: window closed after {close - open_s:.1f} s with {n} of "
                   f"min_requests={min_requests} completions")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of every thread of process ``pid`` so far, by thread id (Linux; {} elsewhere)."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def server_cpu_split(before: dict[int, float], after: dict[int, float], model_threads: int = 1) -> tuple[float, float]:
    """(all threads, all but the ``model_threads`` busiest) CPU seconds between two :func:`thread_cpu_seconds`
    snapshots. The busiest threads are the model's (the batcher's thread and its intra-op workers: pass the
    server's intra-op thread count), so the second figure is the CPU the server spends around the model
    (event loop: HTTP, codecs, validation, logging; worker threads for large bodies)."""
    deltas = sorted((after[t] - before.get(t, 0.0) for t in after), reverse=True)
    total = sum(deltas)
    return total, total - sum(deltas[:model_threads])


def load(server: Server, endpoint: str, clients: int, duration_s: float = 5.0, min_requests: int = 32,
         max_s: float = 120.0, encoding: str = MSGPACK, poll_s: float = 0.01) -> dict[str, Any]:
    """Closed-loop steady-state load: ``clients`` threads (one ``httpx.Client`` each) send batch-1 calls back to back.

    The window opens when every client has completed one request (the first burst is warm-up) and closes
    per :func:`window_close`; then clients stop issuing, in-flight requests finish uncounted. Requests/s =
    completions inside the window / its length; latency percentiles from those completions; mean formed
    batch from ``amplify_batch_requests`` in ``/metrics`` snapshots at the window's edges; client and server
    CPU seconds per counted request over the same span. ``max_s`` (from the first request) is a safety
    limit on when the window must close.
    """
    bodies = [body(request_fields(server.meta, endpoint, seed=k), encoding) for k in range(clients)]
    lock = threading.Lock()
    log: list[Completion] = []
    finished_first: set[int] = set()
    opened, stop = threading.Event(), threading.Event()
    edge: dict[str, float] = {}
    counted = [0]  # completions after the window opened (for the live stop rule)
    gate = threading.Barrier(clients + 1, timeout=120)  # connections open, then all start together

    def client(k: int) -> None:
        data, headers = bodies[k]
        with httpx.Client(base_url=server.url, timeout=3600) as c:
            try:
                c.get("/health").raise_for_status()  # open the connection before the clock starts
            except Exception:
                gate.abort()  # release the others (and the coordinator) at once
                raise
            gate.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post(f"/{endpoint}", content=data, headers=headers)
                t1 = time.perf_counter()
                r.raise_for_status()
                with lock:
                    log.append(Completion(k, t0, t1))
                    if opened.is_set():
                        counted[0] += 1
                    elif k not in finished_first:
                        finished_first.add(k)
                        if len(finished_first) == clients:
                            edge["open"] = t1
                            opened.set()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, k) for k in range(clients)]
        try:
            try:
                gate.wait()
            except threading.BrokenBarrierError:
                pass  # a client failed to connect: its error is raised below
            start = time.perf_counter()
            deadline = start + max_s
            while not opened.wait(poll_s):
                if any(f.done() for f in futures):  # a client failed before the window opened
                    break
            if opened.is_set():
                cpu0, server_cpu0, before = time.process_time(), cpu_seconds(server.proc.pid), server.metrics()
                target = edge["open"] + duration_s
                while not any(f.done() for f in futures):
                    now = time.perf_counter()
                    if (now >= target and counted[0] >= min_requests) or (now >= deadline and counted[0] >= 1):
                        break
                    time.sleep(min(poll_s, max(target - now, 0.0)) or poll_s)
                cpu1, server_cpu1, after = time.process_time(), cpu_seconds(server.proc.pid), server.metrics()
        finally:
            stop.set()
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:  # re-raise a client's own error rather than another's broken barrier
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    wall = time.perf_counter() - start
    if not opened.is_set():
        raise RuntimeError(f"{endpoint} {clients} clients: the window never opened")
    open_s = edge["open"]
    close_s, note = window_close([c.done for c in log], open_s, duration_s, min_requests, deadline)
    inside = [c for c in log if open_s < c.done <= close_s]
    window = close_s - open_s
    calls, reqs = (a - b for a, b in zip(histogram(after, "amplify_batch_requests", endpoint),
                                         histogram(before, "amplify_batch_requests", endpoint)))
    # Little's law cross-check: N clients / mean time between a client's consecutive completions (in window).
    by_client: dict[int, list[float]] = {}
    for c in sorted(log, key=lambda c: c.done):
        by_client.setdefault(c.client, []).append(c.done)
    cycles = [b - a for times in by_client.values() for a, b in zip(times, times[1:]) if open_s < b <= close_s]
    n = len(inside)
    out: dict[str, Any] = {
        "clients": clients, "requests": n, "window_s": window, "requests_per_s": n / window if window > 0 else 0.0,
        "requests_per_s_little": clients / float(np.mean(cycles)) if cycles else None,
        "warmup_s": open_s - start, "wall_s": wall, "issued": len(log),
        **(summarize([c.done - c.sent for c in inside]) if inside else {}),
        "model_calls": calls, "mean_batch_requests": reqs / max(calls, 1),
        "client_cpu_s_per_request": (cpu1 - cpu0) / max(n, 1),
        "server_cpu_s_per_request": (server_cpu1 - server_cpu0) / max(n, 1) if server_cpu0 is not None else None,
        "note": note}
    return out


def concurrency(server: Server, levels: tuple[int, ...] = (1, 4, 16, 64), durations: dict[str, float] | None = None,
                min_requests: int = 32, max_s: float = 120.0, endpoints: tuple[str, ...] = ENDPOINTS) -> dict[str, Any]:
    """:func:`load` at each concurrency level for each endpoint (warm call first); ``durations``: window s per endpoint."""
    durations = {**DEFAULT_DURATIONS, **(durations or {})}
    out: dict[str, Any] = {}
    for endpoint in endpoints:
        data, headers = body(request_fields(server.meta, endpoint), MSGPACK)
        httpx.post(server.url + f"/{endpoint}", content=data, headers=headers, timeout=600).raise_for_status()
        out[endpoint] = {}
        for n in levels:
            r = out[endpoint][str(n)] = load(server, endpoint, n, durations[endpoint], min_requests, max_s)
            shown = {k: round(v, 4) for k, v in r.items() if k in ("requests_per_s", "requests", "window_s", "p50_s",
                                                                  "p99_s", "mean_batch_requests", "wall_s")}
            print(f"  {endpoint} {n} clients: {json.dumps(shown)}{'  ' + r['note'] if r['note'] else ''}", flush=True)
    return out


def server_args(bundle: str, threads: int, device: str, precision: str = "fp32") -> list[str]:
    """The ``amplify serve`` arguments every benchmark server shares."""
    return ["--model", bundle, "--backend", "torch", "--threads", str(threads), "--device", device, "--precision", precision,
            "--log-format", "text", "log_level=warning", "request_timeout_s=3600", "queue_size=4096"]


def run(bundle: str, model: Any, threads: int = 2, device: str = "cpu", repeats: int = 20,
        levels: tuple[int, ...] = (1, 4, 16, 64), durations: dict[str, float] | None = None, min_requests: int = 32,
        max_s: float = 120.0, max_batch_size: int = 16, sections: tuple[str, ...] = ("overhead", "concurrency"),
        precision: str = "fp32", endpoints: tuple[str, ...] = ENDPOINTS) -> dict[str, Any]:
    """Sections 2 (overhead, on the unbatched server) and 3 (concurrency, batching off then on); the servers
    run ``precision`` (fp32 or bf16); section 3 loads ``endpoints``."""
    from benchmarks.server import server_env, thread_policy

    out: dict[str, Any] = {"max_batch_size": max_batch_size, "max_wait_ms": 5.0, "server_threads": threads,
                           "precision": precision,
                           "server_thread_policy": thread_policy(server_env()),
                           "window": {"durations_s": {**DEFAULT_DURATIONS, **(durations or {})},
                                      "min_requests": min_requests, "max_s": max_s}}
    torch.set_num_threads(threads)  # in-process comparisons run with the server's thread count
    common = server_args(bundle, threads, device, precision)
    with Server(*common, "--max-batch-size", "1") as server:
        if "overhead" in sections:
            print("service overhead (batch 1, unbatched server)", flush=True)
            out["overhead"] = overhead(server, model, repeats, threads)
        if "concurrency" in sections:
            print("concurrency, batching off", flush=True)
            out["unbatched"] = concurrency(server, levels, durations, min_requests, max_s, endpoints)
    if "concurrency" in sections:
        with Server(*common, "--max-batch-size", str(max_batch_size), "--max-wait-ms", "5") as server:
            print(f"concurrency, batching on (max_batch_size={max_batch_size})", flush=True)
            out["batched"] = concurrency(server, levels, durations, min_requests, max_s, endpoints)
    return out
