"""Service benchmark: side-by-side numbers from one run, each configuration in its own
``amplify serve`` subprocess on a free port, clients in this process.

    python -m service.bench                                   # batching on/off, JSON vs msgpack (torch)
    python -m service.bench --model amplify.pt --onnx exported/onnx --torchscript exported/ts
    python -m service.bench --clients 16 --requests 8 --out bench.json

Measures /act with b = 1 per request: throughput and latency percentiles with ``--clients``
concurrent clients, for max_batch_size=1 (no batching) and the configured batch size; the same
with JSON bodies; and single-client latency per back end when export directories are given.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np

from service.codecs import pack_array

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``amplify serve`` in a subprocess until ready."""

    def __init__(self, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "amplify", "serve", "--port", str(self.port), *args],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ})

    def __enter__(self) -> "Server":
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"amplify serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    self.meta = httpx.get(self.url + "/metadata").json()
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("amplify serve did not become ready")

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def act_body(meta: dict[str, Any], encoding: str, seed: int) -> tuple[bytes, str]:
    rng = np.random.default_rng(seed)
    h, w = meta["image_size"]
    fields = {"images": rng.integers(0, 256, (1, len(meta["views"]), h, w, 3), dtype=np.uint8),
              "proprio": rng.standard_normal((1, meta["proprio_dim"])).astype(np.float32),
              "text_emb": rng.standard_normal((1, meta["text_embedding_dim"])).astype(np.float32)}
    if encoding == "msgpack":
        return msgpack.packb({k: pack_array(v) for k, v in fields.items()}), "application/msgpack"
    return json.dumps({k: v.tolist() for k, v in fields.items()}).encode(), "application/json"


def _batch_counts(server: Server) -> tuple[float, float]:
    """(model calls, requests) of /act so far, from /metrics."""
    count = sum_ = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith('amplify_batch_requests_count{endpoint="act"}'):
            count = float(line.split()[-1])
        if line.startswith('amplify_batch_requests_sum{endpoint="act"}'):
            sum_ = float(line.split()[-1])
    return count, sum_


def load(server: Server, clients: int, requests: int, encoding: str) -> dict[str, float]:
    """``clients`` threads each sending ``requests`` /act calls; throughput and latency percentiles."""
    bodies = [act_body(server.meta, encoding, k) for k in range(clients)]
    latencies: list[float] = []

    def client(k: int) -> None:
        body, ctype = bodies[k]
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for _ in range(requests):
                t = time.perf_counter()
                r = c.post("/act", content=body, headers={"content-type": ctype})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

    client(0)  # warm calls outside the timing
    latencies.clear()
    before = _batch_counts(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    after = _batch_counts(server)
    count, sum_ = after[0] - before[0], after[1] - before[1]
    return {"requests_per_s": round(len(lat) / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1), "mean_requests_per_batch": round(sum_ / max(count, 1), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="bundle for the torch runs (default: amplify serve's default)")
    p.add_argument("--onnx", help="an `amplify export --format onnx` directory")
    p.add_argument("--torchscript", help="an `amplify export --format torchscript` directory")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=8, help="requests per client")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args(argv)
    common = ((["--threads", str(args.threads)] if args.threads else [])
              + ["--log-format", "text", "log_level=warning", "request_timeout_s=600", "queue_size=4096"])
    model = ["--model", args.model] if args.model else []
    results: dict[str, Any] = {"clients": args.clients, "requests_per_client": args.requests}
    for name, extra, enc in [
        ("torch, no batching (max_batch_size=1), msgpack", ["--max-batch-size", "1"], "msgpack"),
        (f"torch, batching (max_batch_size={args.max_batch_size}, max_wait_ms=5), msgpack",
         ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", "5"], "msgpack"),
        (f"torch, batching (max_batch_size={args.max_batch_size}, max_wait_ms=5), JSON",
         ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", "5"], "json"),
    ]:
        with Server(*model, *common, *extra) as server:
            results[name] = load(server, args.clients, args.requests, enc)
        print(f"{name}: {results[name]}", flush=True)
    for backend, path in [("torch", args.model), ("onnx", args.onnx), ("torchscript", args.torchscript)]:
        if backend != "torch" and not path:
            continue
        target = ["--model", path] if path else []
        with Server(*target, "--backend", backend, *common, "--max-batch-size", "1") as server:
            results[f"{backend}, 1 client"] = load(server, 1, args.requests * 2, "msgpack")
        print(f"{backend}, 1 client: {results[f'{backend}, 1 client']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
