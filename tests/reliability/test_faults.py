"""Faults: clients that vanish or crawl, SIGTERM under load, bad model files, a back end that raises,
and a replica killed behind the balancer. A robot must never be left without an answer because
another client misbehaved."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.reliability.harness import (
    JSON, MSGPACK, REPO, ServerProcess, check_answer, encode, free_port, rss_bytes, valid_payloads,
)

pytestmark = pytest.mark.timeout(240)  # a hang is a failure, not a stuck suite


def _meta(url: str) -> dict:
    return httpx.get(url + "/metadata", timeout=10).json()


def _post(url: str, path: str, payload: dict, enc: str = MSGPACK, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + path, content=encode(payload, enc), headers={"content-type": enc}, timeout=timeout)


def _in_flight(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("amplify_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no amplify_requests_in_flight in /metrics")


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# -- clients that vanish --------------------------------------------------------------------------------
def test_clients_that_disconnect(live_server) -> None:
    """Raw sockets that close mid-headers, mid-upload, and right after sending a whole /act request
    (before the answer): the server stays up, frees them, and answers everyone else correctly."""
    url, port = live_server.url, live_server.port
    payloads = valid_payloads(_meta(url), batch=2)
    act_body = encode(payloads["/act"], MSGPACK)
    head = (f"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: {MSGPACK}\r\n"
            f"Content-Length: {len(act_body)}\r\n\r\n").encode()
    for i in range(10):
        for cut in (head[:20], head + act_body[: len(act_body) // 3], head + act_body):
            s = _connect(port)
            s.sendall(cut)
            if i % 2:  # half the time an abortive close (RST) rather than FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
    # The abandoned /act requests may still be queued or running; others get correct answers meanwhile.
    for path in ("/encode", "/act", "/decode"):
        check_answer(path, _post(url, path, payloads[path]), batch=2)
    deadline = time.monotonic() + 30
    while _in_flight(url) > 1 and time.monotonic() < deadline:  # 1: the /metrics request itself
        time.sleep(0.2)
    assert _in_flight(url) <= 1, "disconnected requests were never released"
    assert live_server.proc.poll() is None


def test_slow_clients_do_not_block_others(live_server) -> None:
    """Slowloris: 64 connections dribble headers or a body a byte at a time; a well-behaved client
    still gets every answer promptly, and the slow ones do not pin the server's memory."""
    url, port = live_server.url, live_server.port
    payloads = valid_payloads(_meta(url))
    stop = threading.Event()
    socks: list[socket.socket] = []
    for i in range(64):
        s = _connect(port)
        if i % 2:
            s.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        else:
            s.sendall(f"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\nContent-Length: 100000\r\n\r\n".encode())
        socks.append(s)

    def dribble() -> None:
        while not stop.is_set():
            for k, s in enumerate(socks):
                try:
                    s.sendall(b"X-a: b\r\n" if k % 2 else b"[")
                except OSError:
                    pass
            stop.wait(0.5)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        rss0 = rss_bytes(live_server.pid)
        latencies = []
        for i in range(12):
            path = ("/encode", "/decode", "/act")[i % 3]
            t0 = time.perf_counter()
            check_answer(path, _post(url, path, payloads[path], enc=(JSON, MSGPACK)[i % 2], timeout=30))
            latencies.append(time.perf_counter() - t0)
        assert max(latencies) < 10, latencies
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        assert rss_bytes(live_server.pid) - rss0 < 200 * 2**20
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()


# -- a client that floods ----------------------------------------------------------------------------------
def test_flooding_client_does_not_leave_a_robot_without_answer(bundle_dir, tmp_path) -> None:
    """One client fires 48 concurrent /act requests at a server with an 8-deep queue. Every flood
    request gets an answer: 200, or 503 `queue_full` with Retry-After (never a hang or another 5xx);
    meanwhile a robot using the client library (retries on 503) gets every one of its 5 actions."""
    from clients import AmplifyClient

    with ServerProcess(bundle_dir, args=["queue_size=8", "max_batch_size=4"], log_dir=tmp_path) as server:
        meta = _meta(server.url)
        payload = valid_payloads(meta)["/act"]
        body = encode(payload, MSGPACK)
        statuses: list[int] = []
        bad: list[str] = []
        lock = threading.Lock()

        def flood(_: int) -> None:
            r = httpx.post(server.url + "/act", content=body, headers={"content-type": MSGPACK}, timeout=60)
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 503:
                    if r.json()["error"]["code"] != "queue_full" or "retry-after" not in r.headers:
                        bad.append(r.text[:200])
                elif r.status_code != 200:
                    bad.append(f"{r.status_code} {r.text[:200]}")

        with ThreadPoolExecutor(48) as pool:
            futures = [pool.submit(flood, i) for i in range(48)]
            with AmplifyClient(server.url, retries=30, timeout=60) as robot:
                for _ in range(5):
                    actions = robot.act(payload["images"], payload["proprio"], text_emb=payload["text_emb"])
                    assert actions.shape == (1, meta["action_horizon"], meta["action_dim"])
            for f in futures:
                f.result(timeout=120)
        assert not bad, bad[:3]
        assert len(statuses) == 48 and set(statuses) <= {200, 503}
        assert 503 in statuses, "the flood never filled the queue; the test did not test anything"


# -- SIGTERM --------------------------------------------------------------------------------------------
def test_sigterm_finishes_in_flight_requests(bundle_dir, tmp_path) -> None:
    """SIGTERM with /act requests in flight: each gets its 200, new connections are refused, and the
    process exits on its own with code 0."""
    with ServerProcess(bundle_dir, args=["max_batch_size=1"], log_dir=tmp_path) as server:
        payload = valid_payloads(_meta(server.url), batch=2)["/act"]
        n = 6
        started = threading.Barrier(n + 1)

        def one(_: int) -> httpx.Response:
            started.wait()
            return _post(server.url, "/act", payload, timeout=60)

        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
            started.wait()
            deadline = time.monotonic() + 10
            while _in_flight(server.url) < n + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.signal(signal.SIGTERM)
            time.sleep(0.5)
            refused = False
            for _ in range(20):
                try:
                    r = httpx.get(server.url + "/health", timeout=2)
                except httpx.TransportError:
                    refused = True
                    break
                time.sleep(0.1)
            responses = [f.result(timeout=60) for f in futures]
        for r in responses:
            check_answer("/act", r, batch=2)
        assert refused, "the server still accepted new connections after SIGTERM"
        code = server.wait_exit(30)
        assert code == 0, f"exit code {code}; log:\n{server.log()[-2000:]}"


# -- bad model files ------------------------------------------------------------------------------------
def _bad_models(bundle_dir: Path, root: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (model path, text the message must name (the file), text naming the problem)."""
    missing = root / "nowhere" / "model"
    truncated = root / "truncated"
    shutil.copytree(bundle_dir, truncated)
    w = truncated / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    mismatched = root / "mismatched"
    shutil.copytree(bundle_dir, mismatched)
    doc = json.loads((mismatched / "config.json").read_text())
    doc["config"]["forward_dynamics"]["hidden_dim"] = 96
    (mismatched / "config.json").write_text(json.dumps(doc))
    no_weights = root / "no_weights"
    shutil.copytree(bundle_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    garbage_cfg = root / "garbage_cfg"
    shutil.copytree(bundle_dir, garbage_cfg)
    (garbage_cfg / "config.json").write_text("{ not json")
    garbage_pt = root / "garbage.pt"
    garbage_pt.write_bytes(b"this is not a checkpoint\n" * 10)
    truncated_pt = root / "truncated.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {}}, truncated_pt)
    truncated_pt.write_bytes(truncated_pt.read_bytes()[:2000])
    return {
        "missing": (missing, str(missing), "does not exist"),
        "truncated": (truncated, str(w), "truncated or corrupt"),
        "mismatched": (mismatched, str(mismatched), "do not fit"),
        "no-weights": (no_weights, str(no_weights / "model.safetensors"), "missing"),
        "garbage-config": (garbage_cfg, str(garbage_cfg / "config.json"), "not valid JSON"),
        "garbage-pt": (garbage_pt, str(garbage_pt), "not a readable checkpoint"),
        "truncated-pt": (truncated_pt, str(truncated_pt), "truncated or corrupt"),
    }


def test_bad_model_files_refuse_to_start(bundle_dir, tmp_path) -> None:
    """Each bad model: `amplify serve` exits non-zero with a message naming the file and the problem
    (all started at once to keep this test short)."""
    cases = _bad_models(bundle_dir, tmp_path)
    procs = {}
    for name, (model, _, _) in cases.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "amplify", "serve", "--model", str(model), "--port", str(free_port()),
             "--log-format", "text"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, start_new_session=True)
    failures = []
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            failures.append(f"{name}: still running after 120 s (should have exited)")
            continue
        _, must_name, problem = cases[name]
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if proc.returncode == 0:
            failures.append(f"{name}: exit code 0")
        if must_name not in last or problem not in last:
            failures.append(f"{name}: last line {last!r} does not name {must_name!r} and {problem!r}")
        if "Traceback" in out:
            failures.append(f"{name}: a traceback was printed")
    assert not failures, "\n".join(failures)


# -- a back end that raises -----------------------------------------------------------------------------
class FlakyBackend:
    """The real back end, except that /act raises when proprio[0, 0] == 123 (an internal fault)."""

    SECRET = "/srv/secret/path/weights.bin: CUDA error 700 at kernel.cu:42"

    def __init__(self, backend):
        self._backend = backend
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def act(self, images, proprio, text_emb, sampling="argmax", seed=None):
        self.calls += 1
        if (proprio[:, 0] == 123).any():
            raise RuntimeError(self.SECRET)
        return self._backend.act(images, proprio, text_emb, sampling, seed)

    def close(self) -> None:
        pass


def test_backend_that_raises(make_client, torch_backend) -> None:
    """500 with the request id, the contract's error body and no traceback or internal detail; the next
    request (and requests batched with the faulty one's batch-mates afterwards) work."""
    backend = FlakyBackend(torch_backend)
    with make_client(backend=backend) as c:
        payload = valid_payloads(c.get("/metadata").json())["/act"]
        bad = {**payload, "proprio": np.full_like(payload["proprio"], 123)}
        for enc in (JSON, MSGPACK):
            r = c.post("/act", content=encode(bad, enc), headers={"content-type": enc, "x-request-id": "robot-7.step-42"})
            assert r.status_code == 500, r.text
            assert r.headers["x-request-id"] == "robot-7.step-42"
            err = r.json()["error"]
            assert err["request_id"] == "robot-7.step-42" and err["code"] == "internal_error"
            assert "robot-7.step-42" in err["message"]
            assert "Traceback" not in r.text and "secret" not in r.text and "CUDA" not in r.text
            check_answer("/act", c.post("/act", content=encode(payload, enc), headers={"content-type": enc}))
        assert backend.calls >= 4
        assert 'status="500"' in c.get("/metrics").text


class StuckBackend(FlakyBackend):
    """The real back end, except that /act takes 3 s when proprio[0, 0] == 7 (a stuck device)."""

    def act(self, images, proprio, text_emb, sampling="argmax", seed=None):
        if (proprio[:, 0] == 7).any():
            time.sleep(3)
        return self._backend.act(images, proprio, text_emb, sampling, seed)


def test_backend_that_hangs_times_out(make_client, torch_backend) -> None:
    """A stuck model call: the caller gets the contract's 504 at the request deadline (not a hang), and
    the service answers normally once the call returns."""
    with make_client(backend=StuckBackend(torch_backend), request_timeout_s=1.0) as c:
        payload = valid_payloads(c.get("/metadata").json())["/act"]
        stuck = {**payload, "proprio": np.full_like(payload["proprio"], 7)}
        t0 = time.perf_counter()
        r = c.post("/act", content=encode(stuck, MSGPACK), headers={"content-type": MSGPACK})
        elapsed = time.perf_counter() - t0
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
        assert elapsed < 2.5, elapsed
        time.sleep(2.5)
        check_answer("/act", c.post("/act", content=encode(payload, MSGPACK), headers={"content-type": MSGPACK}))


# -- a replica killed behind the balancer ----------------------------------------------------------------
def test_replica_killed_behind_balancer(bundle_dir) -> None:
    """Two replicas behind the deploy branch's nginx config: one is SIGKILLed while 4 robot clients
    (the client library, retries on) run /act and /encode through the balancer; every call finishes
    with a correct answer."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx); the balancer test needs it")
    from clients import AmplifyClient
    from docker.local_stack import LocalStack

    with LocalStack(model=str(bundle_dir), replicas=2, settings={"AMPLIFY_THREADS": "1",
                                                                  "AMPLIFY_LOG_LEVEL": "warning"}) as stack:
        meta = _meta(stack.url)
        payloads = valid_payloads(meta)
        stop = threading.Event()
        done, errors = [0], []
        lock = threading.Lock()

        def robot(k: int) -> None:
            with AmplifyClient(stack.url, retries=5, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    try:
                        if (i + k) % 2:
                            a = client.act(payloads["/act"]["images"], payloads["/act"]["proprio"],
                                           text_emb=payloads["/act"]["text_emb"])
                            assert a.shape == (1, meta["action_horizon"], meta["action_dim"])
                        else:
                            idx = client.encode(payloads["/encode"]["tracks"])["indices"]
                            assert idx.shape == (1, meta["code_length"])
                        with lock:
                            done[0] += 1
                    except Exception as e:
                        with lock:
                            errors.append(f"{type(e).__name__}: {e}")
                    i += 1

        threads = [threading.Thread(target=robot, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        before = done[0]
        stack.kill_replica(0)
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, errors[:5]
        assert before > 0 and done[0] > before + 4, (before, done[0])
        statuses = {e["upstream_status"] for e in stack.access_log()}
        assert {e["status"] for e in stack.access_log() if e["uri"] in ("/act", "/encode")} == {200}, statuses
