"""``amplify serve`` in a subprocess on a free port, and reading its Prometheus counters.

The one server helper of the benchmarks (sections 2 and 3 of ``benchmarks.run_all``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The servers' environment: this one, with ``GOMP_SPINCOUNT=10000`` unless ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` is set. libgomp's idle threads then spin briefly (covering the gaps between one
    op and the next) and sleep soon after (leaving the cores to the clients that share them). Paper
    bundle, 2 threads, quiet box: /act at one client 269 ms vs 360 ms with ``OMP_WAIT_POLICY=PASSIVE``
    (threads always sleep) and 261 ms with libgomp's default long spin; /encode 16 clients batched 346
    vs 304 vs 345 req/s. Long spinning on busy shared cores made one ``act`` 0.8-8 s."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = "10000"
    return env


def thread_policy(env: dict[str, str]) -> str:
    """How ``env`` sets libgomp's idle threads, for the results: e.g. ``GOMP_SPINCOUNT=10000``."""
    parts = [f"{k}={env[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in env]
    return " ".join(parts) or "libgomp default (spin ~300k iterations)"


class Server:
    """``amplify serve ARGS`` in a subprocess; ``with Server(...) as s:`` waits for ``/ready``."""

    def __init__(self, *args: str, ready_timeout_s: float = 600):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.ready_timeout_s = ready_timeout_s
        self.meta: dict[str, Any] = {}
        self.proc = subprocess.Popen([sys.executable, "-m", "amplify", "serve", "--port", str(self.port), *args],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=server_env())

    def __enter__(self) -> "Server":
        deadline = time.time() + self.ready_timeout_s
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
        self.__exit__()
        raise RuntimeError(f"amplify serve {' '.join(self.args)} did not become ready in {self.ready_timeout_s} s")

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def metrics(self) -> dict[str, float]:
        """Every un-labelled-or-labelled sample of ``/metrics`` as ``{'name{labels}': value}``."""
        out: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out


def histogram(metrics: dict[str, float], name: str, endpoint: str) -> tuple[float, float]:
    """(count, sum) of histogram ``name`` for ``endpoint`` in a :meth:`Server.metrics` snapshot."""
    label = f'{{endpoint="{endpoint}"}}'
    return metrics.get(f"{name}_count{label}", 0.0), metrics.get(f"{name}_sum{label}", 0.0)
