"""Batching, the bounded queue, timeouts, readiness, seeded sampling (live servers); the batcher's wait rule."""
from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch

from amplify import AMPLIFY
from service.backends.torch_backend import TorchBackend
from service.batching import Batcher
from tests.service.live import live_server, post, result, untrained_backend


class SlowBackend(TorchBackend):
    """The real model with a pause before each act call (to hold the worker busy)."""

    delay_s = 0.5

    def act(self, *args, **kwargs):
        time.sleep(self.delay_s)
        return super().act(*args, **kwargs)


def slow_factory(delay_s: float):
    def factory(settings):
        base = untrained_backend()
        backend = SlowBackend(base.model, base.model_metadata())
        backend.delay_s = delay_s
        return backend
    return factory


def act_body(b: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": rng.random((b, 2, 16, 16, 3), dtype=np.float32), "proprio": rng.random((b, 9), dtype=np.float32),
            "text_emb": rng.random((b, 512), dtype=np.float32)}


def metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_concurrent_clients_are_batched_and_get_their_own_results(fixture_server, small_data):
    _, inp, exp = small_data
    before = fixture_server.client.get("/metrics").text
    n = 12

    def call(k: int):
        j = k % 2
        with httpx.Client(base_url=fixture_server.url, timeout=120) as c:
            body = {"images": inp["images"][j:j + 1], "proprio": inp["proprio"][j:j + 1], "text_emb": inp["text_emb"][j:j + 1]}
            return j, result(post(c, "/act", body, "msgpack" if k % 3 else "json"))["actions"]

    with ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(call, range(n)))
    for j, actions in outs:
        np.testing.assert_allclose(actions[0], exp["amp_actions"][j], atol=1e-4)
    after = fixture_server.client.get("/metrics").text
    count = metric(after, "amplify_batch_requests_count", 'endpoint="act"') - metric(before, "amplify_batch_requests_count", 'endpoint="act"')
    total = metric(after, "amplify_batch_requests_sum", 'endpoint="act"') - metric(before, "amplify_batch_requests_sum", 'endpoint="act"')
    assert total == n
    assert count < n, "every request ran alone: no batch larger than one formed"
    assert metric(after, "amplify_batch_size_count", 'endpoint="act"') > 0
    assert metric(after, "amplify_queue_seconds_count", 'endpoint="act"') >= n


def test_seeded_topk_is_reproducible_and_matches_the_model(fixture_server, small_data):
    path, inp, _ = small_data
    body = {"images": inp["images"], "text_emb": inp["text_emb"], "sampling": "topk", "seed": 7}
    first = result(post(fixture_server.client, "/predict_codes", body, "msgpack"))["indices"]
    model = AMPLIFY.load(path)
    expected, _ = model.predict_codes(inp["images"], text_emb=inp["text_emb"], ar_sampling="topk",
                                      generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(first, expected.numpy())

    def call(k: int):  # seeded requests among unseeded ones, all at once
        with httpx.Client(base_url=fixture_server.url, timeout=120) as c:
            b = dict(body) if k % 2 == 0 else {**body, "seed": None}
            return k, result(post(c, "/predict_codes", b, "msgpack"))["indices"]

    with ThreadPoolExecutor(6) as pool:
        for k, indices in pool.map(call, range(6)):
            if k % 2 == 0:
                np.testing.assert_array_equal(indices, first)
    other = result(post(fixture_server.client, "/predict_codes", {**body, "seed": 8}, "msgpack"))["indices"]
    expected8, _ = model.predict_codes(inp["images"], text_emb=inp["text_emb"], ar_sampling="topk",
                                       generator=torch.Generator().manual_seed(8))
    np.testing.assert_array_equal(other, expected8.numpy())


def test_queue_full_is_503_with_retry_after():
    with live_server(slow_factory(0.4), warmup=False, queue_size=2, max_batch_size=1) as server:
        def call(k: int):
            with httpx.Client(base_url=server.url, timeout=60) as c:
                return post(c, "/act", act_body(1, k), "msgpack")

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes, codes
        full = [r for r in responses if r.status_code == 503]
        assert all(r.headers.get("retry-after") and r.json()["error"]["code"] == "queue_full" for r in full)
        assert post(server.client, "/act", act_body(), "msgpack").status_code == 200  # still serving


def test_timeout_is_504_and_health_answers_during_a_long_batch():
    with live_server(slow_factory(1.5), warmup=False, request_timeout_s=0.5) as server:
        done = {}

        def slow_call():
            with httpx.Client(base_url=server.url, timeout=60) as c:
                done["r"] = post(c, "/act", act_body(), "msgpack")

        t = threading.Thread(target=slow_call)
        t.start()
        time.sleep(0.1)
        health = server.client.get("/health")
        metrics = server.client.get("/metrics")
        assert health.status_code == 200 and metrics.status_code == 200
        assert t.is_alive(), "health should answer while the model is busy"
        t.join()
        r = done["r"]
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert r.headers["x-request-id"]


def test_ready_turns_200_only_after_loading():
    release = threading.Event()

    def held_factory(settings):
        release.wait(30)
        return untrained_backend()

    with live_server(held_factory, wait_ready=False) as server:
        c = server.client
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        assert c.get("/health").status_code == 200
        r = post(c, "/act", act_body())
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert c.get("/metadata").status_code == 503
        release.set()
        server.await_ready()
        assert c.get("/ready").json()["status"] == "ready"
        meta = c.get("/metadata").json()
        assert meta["model"]["name"] == "untrained-small" and meta["trained"] is False
        assert result(post(c, "/act", act_body(2)))["actions"].shape == (2, 16, 7)


def test_failed_load_is_reported_on_ready(tmp_path):
    with live_server(wait_ready=False, model=str(tmp_path / "missing.pt")) as server:
        deadline = time.time() + 30
        while server.app.state.service.status == "loading" and time.time() < deadline:
            time.sleep(0.05)
        r = server.client.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "failed" and "missing.pt" in r.json()["detail"]


class BrokenBackend(TorchBackend):
    """The real model, except that act fails (a server fault, not bad input)."""

    def act(self, *args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert (simulated)")


def test_a_server_fault_is_500_with_the_request_id_and_no_traceback():
    def factory(settings):
        base = untrained_backend()
        return BrokenBackend(base.model, base.model_metadata())

    with live_server(factory, warmup=False) as server:
        r = post(server.client, "/act", act_body(), "msgpack", headers={"x-request-id": "req-500"})
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "internal_error" and err["request_id"] == "req-500"
        assert "Traceback" not in r.text and "simulated" not in r.text
        assert result(post(server.client, "/predict_codes", {k: v for k, v in act_body().items() if k != "proprio"},
                           "msgpack"))["indices"].shape == (1, 15)  # the rest keeps serving


def _batcher_run(coro_fn):
    batcher = Batcher(max_batch_size=8, max_wait_ms=2000)
    batcher.start()
    try:
        return asyncio.run(coro_fn(batcher))
    finally:
        batcher.stop()


def _double(x: dict) -> dict:
    return {"y": x["x"] * 2}


def test_a_lone_request_does_not_wait_for_max_wait_when_nothing_else_is_arriving():
    async def go(batcher):
        start = time.perf_counter()
        out, timing = await batcher.submit("e", "k", _double, {"x": np.ones((1, 3))}, 1)
        return time.perf_counter() - start, out, timing

    elapsed, out, timing = _batcher_run(go)
    np.testing.assert_array_equal(out["y"], np.full((1, 3), 2.0))
    assert elapsed < 1.0, f"a lone request waited {elapsed:.2f} s (max_wait is 2 s)"
    assert timing.batch_requests == 1


def test_a_forming_batch_waits_for_a_request_that_is_arriving():
    async def go(batcher):
        async def late():
            with batcher.arriving():  # being read and validated
                await asyncio.sleep(0.3)
            return await batcher.submit("e", "k", _double, {"x": np.full((1, 3), 5.0)}, 1)

        task = asyncio.create_task(late())
        await asyncio.sleep(0.05)  # `late` is arriving when the first request is queued
        first = await batcher.submit("e", "k", _double, {"x": np.ones((1, 3))}, 1)
        return first, await task

    (out1, t1), (out2, t2) = _batcher_run(go)
    np.testing.assert_array_equal(out2["y"], np.full((1, 3), 10.0))
    assert t1.batch_requests == t2.batch_requests == 2, "the arriving request should have joined the batch"
    assert t1.queue_s >= 0.2


def test_timing_resume_is_the_hop_back_to_the_event_loop():
    """``resume_s``: from the outputs being ready to the request's coroutine running again. Here the event
    loop is held busy for 0.3 s while a 0.05 s model finishes, so the request resumes ~0.25 s late."""
    def slow_double(x):
        time.sleep(0.05)
        return _double(x)

    async def go(batcher):
        task = asyncio.create_task(batcher.submit("e", "k", slow_double, {"x": np.ones((1, 3))}, 1))
        await asyncio.sleep(0)  # the request is queued
        time.sleep(0.3)  # the event loop is busy (blocking on purpose) while the worker finishes
        return await task

    out, timing = _batcher_run(go)
    np.testing.assert_array_equal(out["y"], np.full((1, 3), 2.0))
    assert timing.model_s >= 0.05
    assert 0.15 <= timing.resume_s < 5.0, timing


def test_a_lone_request_resumes_at_once_when_the_event_loop_is_free():
    (_, timing) = _batcher_run(lambda b: b.submit("e", "k", _double, {"x": np.ones((1, 3))}, 1))
    assert 0.0 < timing.resume_s < 0.5 and timing.done_at > 0

