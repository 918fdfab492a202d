"""Reliability harness: live ``amplify serve`` processes, valid request payloads, and a load generator.

Used by the tests in this folder and by the longer runs (``python -m tests.reliability.soak``).
Shapes come from the served model's ``/metadata`` (b batch, v views, H points per track, n tracks,
S code tokens, h hidden size, E text-embedding size).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx
import msgpack
import numpy as np

REPO = Path(__file__).resolve().parents[2]
JSON = "application/json"
MSGPACK = "application/msgpack"


# -- processes ----------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class ServerProcess:
    """``python -m amplify serve`` in its own process group, on a free port, logging to a file.

    ``args`` are extra command-line arguments (flags or ``key=value`` overrides); ``env`` extra
    environment variables. Use as a context manager (starts, waits for /ready, stops)."""

    def __init__(self, model: str | Path | None, args: Iterable[str] = (), env: dict[str, str] | None = None,
                 threads: int = 1, log_dir: str | Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="amplify-rel-")
            log_dir = self._tmp.name
        self.log_path = Path(log_dir) / f"serve-{self.port}.log"
        self.cmd = [sys.executable, "-m", "amplify", "serve", "--port", str(self.port), "--threads", str(threads),
                    "--log-format", "text", *([] if model is None else ["--model", str(model)]), *args]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "AMPLIFY_LOG_LEVEL": "warning", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Poll /ready until 200; raise with the server's log if it exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before ready:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log()[-3000:]}")

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        """Wait for the process to exit on its own; -> its exit code."""
        return self.proc.wait(timeout=timeout_s)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server process itself (not its group)."""
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; only this process group."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "ServerProcess":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


# -- payloads -----------------------------------------------------------------------------------------
def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """The contract's msgpack ndarray map (written here from API.md, not imported from the service)."""
    arr = np.ascontiguousarray(arr)
    return {"__ndarray__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def encode(payload: dict[str, Any], encoding: str) -> bytes:
    """A dict of fields (numpy arrays allowed) as a JSON or msgpack body."""
    if encoding == MSGPACK:
        return msgpack.packb({k: pack_array(v) if isinstance(v, np.ndarray) else v for k, v in payload.items()},
                             use_bin_type=True)
    return json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in payload.items()}).encode()


def decode(resp: httpx.Response) -> dict[str, Any]:
    """A response body (JSON or msgpack, ndarray maps -> numpy) as a dict."""
    if resp.headers.get("content-type", "").startswith(MSGPACK):
        raw = msgpack.unpackb(resp.content, raw=False)
        return {k: np.frombuffer(v["data"], v["dtype"]).reshape(v["shape"])
                if isinstance(v, dict) and v.get("__ndarray__") else v for k, v in raw.items()}
    return resp.json()


def valid_payloads(meta: dict[str, Any], batch: int = 1, seed: int = 0) -> dict[str, dict[str, Any]]:
    """One valid request body per model endpoint for the model ``meta`` (/metadata) describes."""
    rng = np.random.default_rng(seed)
    b, v, H, n = batch, len(meta["views"]), meta["track_horizon"], meta["num_tracks"]
    hi, wi = meta["image_size"]
    images = rng.integers(0, 256, (b, v, hi, wi, 3), dtype=np.uint8)
    text_emb = rng.standard_normal((b, meta["text_embedding_dim"])).astype(np.float32)
    tracks = np.clip(np.cumsum(rng.normal(0, 0.02, (b, v, H, n, 2)), axis=2), -1, 1).astype(np.float32)
    return {
        "/encode": {"tracks": tracks},
        "/decode": {"indices": rng.integers(0, meta["codebook_size"], (b, meta["code_length"])).astype(np.int64),
                    "init_points": tracks[:, :, 0]},
        "/predict_codes": {"images": images, "text_emb": text_emb},
        "/predict_traj": {"images": images, "text_emb": text_emb, "init_points": tracks[:, :, 0]},
        "/act": {"images": images, "proprio": rng.standard_normal((b, meta["proprio_dim"])).astype(np.float32),
                 "text_emb": text_emb},
    }


EXPECTED_FIELD = {"/encode": "indices", "/decode": "velocities", "/predict_codes": "indices",
                  "/predict_traj": "tracks", "/act": "actions"}


def check_answer(path: str, resp: httpx.Response, batch: int = 1) -> None:
    """A 200 carrying the endpoint's main output with the batch first and finite values."""
    assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
    out = np.asarray(decode(resp)[EXPECTED_FIELD[path]])
    assert out.shape[0] == batch and np.isfinite(out).all(), f"{path}: bad output {out.shape}"


# -- load -----------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What a load run saw: per-endpoint latencies (s), failures, and the server's RSS over time."""

    seconds: float = 0.0
    clients: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + len(self.failures)

    def percentile(self, q: float, path: str | None = None) -> float:
        xs = self.latencies[path] if path else [x for v in self.latencies.values() for x in v]
        return float(np.percentile(xs, q)) if xs else float("nan")

    def rss_growth(self, skip_fraction: float = 0.2) -> tuple[int, int, int]:
        """(RSS after the first ``skip_fraction`` of the run (warm), RSS at the end, their difference)."""
        if not self.rss_samples:
            return 0, 0, 0
        t_end = self.rss_samples[-1][0]
        warm = next(r for t, r in self.rss_samples if t >= skip_fraction * t_end)
        end = self.rss_samples[-1][1]
        return warm, end, end - warm

    def summary(self) -> dict[str, Any]:
        warm, end, growth = self.rss_growth()
        return {
            "seconds": round(self.seconds, 1), "clients": self.clients, "requests": self.requests,
            "failures": len(self.failures), "first_failures": self.failures[:5],
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
            "statuses": dict(self.statuses),
            "p50_ms": round(self.percentile(50) * 1000, 1), "p99_ms": round(self.percentile(99) * 1000, 1),
            "by_endpoint": {p: {"n": len(v), "p50_ms": round(self.percentile(50, p) * 1000, 1),
                                "p99_ms": round(self.percentile(99, p) * 1000, 1),
                                "max_ms": round(max(v) * 1000, 1)} for p, v in sorted(self.latencies.items()) if v},
            "rss_start_mib": round(self.rss_samples[0][1] / 2**20, 1) if self.rss_samples else None,
            "rss_warm_mib": round(warm / 2**20, 1), "rss_end_mib": round(end / 2**20, 1),
            "rss_growth_mib": round(growth / 2**20, 1),
            "rss_max_mib": round(max(r for _, r in self.rss_samples) / 2**20, 1) if self.rss_samples else None,
        }


DEFAULT_MIX = (("/encode", 4), ("/decode", 4), ("/act", 2), ("/predict_traj", 1), ("/predict_codes", 1),
               ("/metadata", 1), ("/health", 1))


def run_load(url: str, seconds: float, clients: int, server_pid: int | None = None,
             mix: Iterable[tuple[str, int]] = DEFAULT_MIX, max_batch: int = 2, api_key: str | None = None,
             on_progress: Callable[[LoadReport, float], None] | None = None, progress_every_s: float = 60.0,
             request_timeout_s: float = 60.0) -> LoadReport:
    """``clients`` threads, each with its own keep-alive connection, send a weighted mix of
    endpoints (JSON and msgpack alternately, batches 1..``max_batch``) for ``seconds``. Any answer
    but a correct 200 is a failure. RSS of ``server_pid`` is sampled every 0.5 s."""
    meta = httpx.get(url + "/metadata", headers={"X-API-Key": api_key} if api_key else {}, timeout=30).json()
    bodies: dict[tuple[str, int, str], bytes] = {}
    for b in range(1, max_batch + 1):
        for path, payload in valid_payloads(meta, b, seed=b).items():
            for enc in (JSON, MSGPACK):
                bodies[(path, b, enc)] = encode(payload, enc)
    weighted = [p for p, w in mix for _ in range(w)]
    report = LoadReport(clients=clients)
    lock = threading.Lock()
    stop = threading.Event()
    start = time.perf_counter()

    def worker(k: int) -> None:
        rng = np.random.default_rng(1000 + k)
        headers = {"X-API-Key": api_key} if api_key else {}
        with httpx.Client(base_url=url, timeout=request_timeout_s, headers=headers) as client:
            i = 0
            while not stop.is_set():
                path = weighted[rng.integers(len(weighted))]
                enc = (JSON, MSGPACK)[i % 2]
                b = int(rng.integers(1, max_batch + 1))
                i += 1
                t0 = time.perf_counter()
                try:
                    if path in EXPECTED_FIELD:
                        r = client.post(path, content=bodies[(path, b, enc)],
                                        headers={"content-type": enc, "accept": enc})
                        dt = time.perf_counter() - t0
                        check_answer(path, r, b)
                    else:
                        r = client.get(path)
                        dt = time.perf_counter() - t0
                        assert r.status_code == 200, f"{path}: {r.status_code}"
                    with lock:
                        report.latencies[path].append(dt)
                        report.statuses[str(r.status_code)] += 1
                except Exception as e:  # a failure, whatever it is
                    with lock:
                        report.failures.append(f"{path}: {type(e).__name__}: {str(e)[:200]}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    next_progress = progress_every_s
    while (elapsed := time.perf_counter() - start) < seconds:
        if server_pid is not None:
            try:
                report.rss_samples.append((elapsed, rss_bytes(server_pid)))
            except (OSError, RuntimeError):
                pass
        if on_progress is not None and elapsed >= next_progress:
            report.seconds = elapsed
            on_progress(report, elapsed)
            next_progress += progress_every_s
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(request_timeout_s + 5)
    report.seconds = time.perf_counter() - start
    if server_pid is not None:
        try:
            report.rss_samples.append((report.seconds, rss_bytes(server_pid)))
        except (OSError, RuntimeError):
            pass
    return report
