"""The compose stack without Docker: the images' processes started directly on this machine.

``N`` replicas run the images' command (``amplify serve``) with the images' ``AMPLIFY_*`` settings,
each on its own 127.0.0.1 port; nginx runs ``docker/nginx/nginx.conf`` with only the servers of its
upstream block and its ``listen`` port rendered for those local addresses (Debian's nginx 1.22
lacks the image's ``resolve`` parameter; Docker's DNS is not needed for fixed local ports).

Used by ``docker/local_stack.sh`` (a person's smoke test: a client workload through the balancer
while one replica is killed) and by ``tests/deploy/test_local_stack.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
NGINX_CONF = REPO / "docker" / "nginx" / "nginx.conf"
BEGIN, END = "# BEGIN amplify servers", "# END amplify servers"

# What the images set (docker/Dockerfile ENV) and compose does not override, minus what differs
# per replica here (host, port) and the model path (given per run).
IMAGE_ENV = {"AMPLIFY_BACKEND": "torch", "AMPLIFY_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}


def render_nginx_conf(conf: str, servers: list[tuple[str, int]], listen: tuple[str, int]) -> str:
    """The image's nginx.conf with its upstream servers replaced by ``servers`` and its ``listen``
    by ``listen``; everything else byte for byte the same. Each server keeps the image line's
    parameters except ``resolve`` (fixed addresses need no DNS)."""
    lines = conf.splitlines(keepends=True)
    try:
        begin = next(i for i, ln in enumerate(lines) if ln.strip() == BEGIN)
        end = next(i for i, ln in enumerate(lines) if ln.strip() == END)
    except StopIteration:
        raise ValueError(f"nginx.conf lacks the {BEGIN!r} / {END!r} markers around the upstream servers") from None
    image_servers = [ln for ln in lines[begin + 1:end] if ln.strip().startswith("server ")]
    if len(image_servers) != 1:
        raise ValueError(f"expected one server line between the markers, found {len(image_servers)}")
    indent = image_servers[0][: len(image_servers[0]) - len(image_servers[0].lstrip())]
    params = [p for p in image_servers[0].strip().rstrip(";").split()[2:] if p != "resolve"]
    rendered = [f"{indent}server {host}:{port} {' '.join(params)};\n".replace(" ;", ";") for host, port in servers]
    out = "".join(lines[: begin + 1] + rendered + lines[end:])
    out, n = re.subn(r"^(\s*)listen\s+\S+;", rf"\g<1>listen {listen[0]}:{listen[1]};", out, count=1, flags=re.M)
    if n != 1:
        raise ValueError("nginx.conf has no `listen` line")
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; raise if ``proc`` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode} before answering")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not 200 after {timeout_s:.0f} s (last: {last})")


@dataclass
class Replica:
    """One ``amplify serve`` process."""

    port: int
    log_path: Path
    proc: subprocess.Popen | None = None


@dataclass
class LocalStack:
    """``replicas`` service processes behind nginx, as docker-compose.yml arranges them.

    Use as a context manager; ``url`` is the balancer's base URL. ``settings`` are extra
    ``AMPLIFY_*`` variables (e.g. ``{"AMPLIFY_MAX_BATCH_SIZE": "8"}``), as compose would pass them.
    """

    model: str | None = None
    replicas: int = 2
    settings: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    nginx: str = "nginx"
    ready_timeout_s: float = 180.0
    python: str = sys.executable
    repo: Path = REPO

    def __post_init__(self) -> None:
        self._tmp = None
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="amplify-local-stack-")
            self.workdir = Path(self._tmp.name)
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nginx_prefix = self.workdir / "nginx"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._replicas = [Replica(free_port(), self.workdir / f"replica{i}.log") for i in range(self.replicas)]
        self._nginx_proc: subprocess.Popen | None = None

    # -- processes -------------------------------------------------------------------------------
    def replica_env(self, replica: Replica) -> dict[str, str]:
        """The environment of a replica: the image's settings, compose's, then this host's port."""
        env = dict(os.environ)
        env.update(IMAGE_ENV)
        env.update(self.settings)
        if self.model is not None:
            env["AMPLIFY_MODEL"] = str(self.model)
        env["AMPLIFY_HOST"] = "127.0.0.1"
        env["AMPLIFY_PORT"] = str(replica.port)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.repo), env.get("PYTHONPATH")]))
        return env

    def start_replica(self, i: int) -> None:
        """Start replica ``i`` (the image's CMD, ``amplify serve``), not waiting for it."""
        r = self._replicas[i]
        log = open(r.log_path, "ab")
        r.proc = subprocess.Popen([self.python, "-m", "amplify", "serve"], cwd=self.repo, env=self.replica_env(r),
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_replica_ready(self, i: int, timeout_s: float | None = None) -> None:
        """Wait for replica ``i``'s /ready (the images' HEALTHCHECK)."""
        r = self._replicas[i]
        try:
            wait_http(f"http://127.0.0.1:{r.port}/ready", timeout_s or self.ready_timeout_s, r.proc)
        except Exception as e:
            raise RuntimeError(f"replica {i} not ready: {e}\n--- its log ---\n{self.replica_log(i)[-4000:]}") from e

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Kill replica ``i`` (SIGKILL: it dies mid-request, as a crashed or OOM-killed container)."""
        r = self._replicas[i]
        if r.proc is not None and r.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, sig)
            r.proc.wait(timeout=30)

    def replica_running(self, i: int) -> bool:
        proc = self._replicas[i].proc
        return proc is not None and proc.poll() is None

    def replica_address(self, i: int) -> str:
        return f"127.0.0.1:{self._replicas[i].port}"

    def replica_log(self, i: int) -> str:
        return self._replicas[i].log_path.read_text(errors="replace") if self._replicas[i].log_path.exists() else ""

    @property
    def replica_addresses(self) -> list[str]:
        return [f"127.0.0.1:{r.port}" for r in self._replicas]

    def start_nginx(self) -> None:
        """Render the image's nginx.conf for the local replicas and start nginx in the foreground."""
        if shutil.which(self.nginx) is None:
            raise FileNotFoundError(f"{self.nginx!r} not found (Debian: apt-get install -y nginx)")
        self.nginx_prefix.mkdir(parents=True, exist_ok=True)
        (self.nginx_prefix / "temp").mkdir(exist_ok=True)
        conf = render_nginx_conf(NGINX_CONF.read_text(), [("127.0.0.1", r.port) for r in self._replicas],
                                 ("127.0.0.1", self.port))
        conf_path = self.nginx_prefix / "nginx.conf"
        conf_path.write_text(conf)
        test = subprocess.run([self.nginx, "-t", "-p", f"{self.nginx_prefix}/", "-c", str(conf_path)],
                              capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
        access = open(self.nginx_prefix / "access.log", "ab")
        errors = open(self.nginx_prefix / "error.log", "ab")
        self._nginx_proc = subprocess.Popen(
            [self.nginx, "-p", f"{self.nginx_prefix}/", "-c", str(conf_path), "-g", "daemon off;"],
            stdout=access, stderr=errors, start_new_session=True)
        access.close()
        errors.close()
        wait_http(f"{self.url}/lb-health", 30, self._nginx_proc)

    def access_log(self) -> list[dict[str, Any]]:
        """nginx's JSON access log so far (one dict per request)."""
        path = self.nginx_prefix / "access.log"
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith("{")]

    def start(self) -> "LocalStack":
        """Start every replica, wait until each is ready, then start nginx."""
        for i in range(self.replicas):
            self.start_replica(i)
        for i in range(self.replicas):
            self.wait_replica_ready(i)
        self.start_nginx()
        wait_http(f"{self.url}/ready", 30, self._nginx_proc)
        return self

    def stop(self) -> None:
        """Stop nginx and every replica (SIGTERM, then SIGKILL)."""
        procs = [self._nginx_proc] + [r.proc for r in self._replicas]
        for p in procs:
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            if p is None:
                continue
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a client workload through the balancer --------------------------------------------------------
def act_request(metadata: dict[str, Any], batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """A JSON /act body of ``batch`` random observations shaped as the served model wants."""
    h, w = metadata["image_size"]
    v = len(metadata["views"])
    body: dict[str, Any] = {
        "images": rng.integers(0, 256, (batch, v, h, w, 3), dtype=np.uint8).tolist(),
        "proprio": rng.normal(size=(batch, metadata["proprio_dim"])).round(4).tolist(),
    }
    if metadata.get("instructions"):
        body["text"] = [metadata["instructions"][int(i)] for i in rng.integers(0, len(metadata["instructions"]), batch)]
    else:
        body["text_emb"] = rng.normal(size=(batch, metadata["text_embedding_dim"])).round(4).tolist()
    return body


def encode_request(metadata: dict[str, Any], batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """A JSON /encode body of ``batch`` random tracks in [-1, 1]."""
    shape = (batch, len(metadata["views"]), metadata["track_horizon"], metadata["num_tracks"], 2)
    return {"tracks": rng.uniform(-1, 1, shape).round(4).tolist()}


@dataclass
class LoadResult:
    """What each request of a load run got: HTTP statuses (or exception names) and latencies."""

    statuses: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses.get(200, 0)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_s or [0.0]) * 1000
        return {"requests": self.total, "ok": self.statuses.get(200, 0), "failed": self.failed,
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "latency_ms": {q: round(float(np.percentile(lat, p)), 1) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
                "first_failures": self.failures[:5]}


def run_load(url: str, requests: int, concurrency: int, endpoints: tuple[str, ...] = ("/act", "/encode"),
             batch: int = 1, seed: int = 0, on_progress: Any = None, timeout_s: float = 60.0) -> LoadResult:
    """Send ``requests`` requests (cycling over ``endpoints``) from ``concurrency`` threads, with no
    client-side retry: a request fails unless the balancer got it a 200 from some replica.
    ``on_progress(done)`` is called after each request."""
    metadata = httpx.get(f"{url}/metadata", timeout=10).json()
    makers = {"/act": act_request, "/encode": encode_request}
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        with httpx.Client(timeout=timeout_s, transport=httpx.HTTPTransport(retries=0)) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                endpoint = endpoints[i % len(endpoints)]
                body = makers[endpoint](metadata, batch, rng)
                t0 = time.perf_counter()
                try:
                    r = client.post(f"{url}{endpoint}", json=body, headers={"X-Request-ID": f"load-{i}"})
                    status: Any = r.status_code
                    detail = r.text[:300] if status != 200 else ""
                except httpx.HTTPError as e:
                    status, detail = type(e).__name__, repr(e)
                dt = time.perf_counter() - t0
                with lock:
                    result.statuses[status] += 1
                    if status == 200:
                        result.latencies_s.append(dt)
                    else:
                        result.failures.append(f"{endpoint} load-{i}: {status} {detail}")
                    done = result.total
                if on_progress is not None:
                    on_progress(done)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def retried_requests(access_log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests nginx passed to more than one replica (``upstream_addr`` is "a, b")."""
    return [e for e in access_log if "," in e.get("upstream_addr", "")]


def run_tokenize(stack: LocalStack, inputs: list[str], output: str, kill_after: int | None) -> dict[str, Any]:
    """Run the batch client (``amplify tokenize``) through the balancer; with ``kill_after``, SIGKILL
    replica 0 once the balancer has seen that many /encode requests. Returns a summary."""
    before = len(stack.access_log())
    t0 = time.perf_counter()
    proc = subprocess.Popen([stack.python, "-m", "amplify", "tokenize", "--server", stack.url, "--input", *inputs,
                             "--output", output, "--no-progress"], cwd=stack.repo)
    killed = False
    while proc.poll() is None:
        if kill_after is not None and not killed:
            if sum(e["uri"] == "/encode" for e in stack.access_log()[before:]) >= kill_after:
                print(f"killing replica 0 ({stack.replica_address(0)}) during the batch job", file=sys.stderr)
                stack.kill_replica(0)
                killed = True
        time.sleep(0.05)
    log = [e for e in stack.access_log()[before:] if e["uri"] == "/encode"]
    return {"client_exit_status": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2),
            "encode_requests": len(log), "statuses": dict(Counter(str(e["status"]) for e in log)),
            "failed": sum(e["status"] != 200 for e in log) + (proc.returncode != 0),
            "replica_killed": killed, "retried_by_balancer": len(retried_requests(log))}


def bench(stack: LocalStack, requests: int, concurrency: int, endpoints: tuple[str, ...]) -> dict[str, Any]:
    """The same load straight to replica 0 and then through the balancer (all replicas), side by
    side: what nginx costs per request and what the extra replicas give."""
    rows = {}
    for name, url in (("replica_0_direct", f"http://{stack.replica_address(0)}"), ("balancer", stack.url)):
        run_load(url, max(concurrency, 4), concurrency, endpoints)  # warm the connections and caches
        t0 = time.perf_counter()
        result = run_load(url, requests, concurrency, endpoints)
        wall = time.perf_counter() - t0
        rows[name] = result.summary() | {"wall_s": round(wall, 2), "requests_per_s": round(result.total / wall, 2)}
        rows[name].pop("first_failures")
    rows["throughput_ratio_balancer_vs_direct"] = round(
        rows["balancer"]["requests_per_s"] / rows["replica_0_direct"]["requests_per_s"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Start the local stack, run the load with a replica killed part way, print a JSON summary;
    exit 1 if any request failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="AMPLIFY_MODEL of the replicas (default: the service's default)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--requests", type=int, default=200, help="requests of the load run")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--kill-at", type=float, default=0.3, help="kill replica 0 after this fraction of the requests")
    p.add_argument("--no-kill", action="store_true", help="do not kill a replica")
    p.add_argument("--tokenize", nargs=2, metavar=("INPUT", "OUTPUT"), default=None,
                   help="instead of the built-in load, run the batch client: amplify tokenize --input INPUT --output OUTPUT")
    p.add_argument("--bench", action="store_true",
                   help="no kill: the same load straight to one replica, then through the balancer, side by side")
    p.add_argument("--endpoints", default="/act,/encode", help="endpoints the load cycles over (comma-separated)")
    p.add_argument("--serve", action="store_true", help="after the load, keep the stack up until Ctrl-C")
    p.add_argument("--workdir", default=None, help="keep logs and the rendered nginx.conf here")
    p.add_argument("setting", nargs="*", metavar="AMPLIFY_X=value", help="more settings for the replicas")
    args = p.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.setting)
    stack = LocalStack(model=args.model, replicas=args.replicas, settings=settings,
                       workdir=Path(args.workdir) if args.workdir else None)
    with stack:
        print(f"balancer {stack.url} -> replicas {', '.join(stack.replica_addresses)}", file=sys.stderr)
        endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip())
        if args.bench:
            rows = bench(stack, args.requests, args.concurrency, endpoints)
            print(json.dumps(rows, indent=2))
            return 0 if all(r["failed"] == 0 for r in rows.values() if isinstance(r, dict)) else 1
        if args.tokenize:
            summary = run_tokenize(stack, [args.tokenize[0]], args.tokenize[1], None if args.no_kill else 3)
            print(json.dumps(summary, indent=2))
            return 0 if summary["failed"] == 0 else 1
        kill_after = None if args.no_kill else max(1, int(args.requests * args.kill_at))
        killed = threading.Event()

        def on_progress(done: int) -> None:
            if kill_after is not None and done >= kill_after and not killed.is_set():
                killed.set()
                print(f"killing replica 0 ({stack.replica_addresses[0]}) after {done} requests", file=sys.stderr)
                stack.kill_replica(0)

        t0 = time.perf_counter()
        result = run_load(stack.url, args.requests, args.concurrency, endpoints, on_progress=on_progress)
        wall = time.perf_counter() - t0
        log = stack.access_log()
        summary = result.summary() | {
            "wall_s": round(wall, 2), "requests_per_s": round(result.total / wall, 1),
            "replica_killed": killed.is_set(),
            "retried_by_balancer": len(retried_requests(log)),
            "served_by": dict(Counter(e["upstream_addr"].split(", ")[-1] for e in log if e["uri"] in ("/act", "/encode"))),
        }
        print(json.dumps(summary, indent=2))
        if args.serve:
            print(f"serving at {stack.url}; Ctrl-C stops", file=sys.stderr)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
