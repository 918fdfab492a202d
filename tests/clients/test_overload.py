"""Retries against a real full queue: a server with room for one waiting request answers 503 with
Retry-After; the client without retries raises OverloadedError carrying it, with retries it waits
as told and every call succeeds."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clients import AsyncAmplifyClient, OverloadedError, RetryPolicy


@pytest.fixture(scope="module")
def tiny_queue_server(bundle_dir, tmp_path_factory, start_server):
    with start_server(bundle_dir, tmp_path_factory.mktemp("tiny") / "serve.log",
                    "--queue-size", "1", "--max-batch-size", "1") as live:
        yield live


def _burst(server, retry: RetryPolicy, n: int = 6):
    async def main():
        async with AsyncAmplifyClient(server.url, api_key=server.api_key, retry=retry) as c:
            img, prop, emb = np.zeros((2, 128, 128, 3), np.uint8), np.zeros(9, np.float32), np.zeros(512, np.float32)
            return await asyncio.gather(*[c.act(img, prop, text_emb=emb) for _ in range(n)], return_exceptions=True)

    return asyncio.run(main())


def test_full_queue_503_then_retries_succeed(tiny_queue_server):
    no_retry = _burst(tiny_queue_server, RetryPolicy(retries=0))
    errors = [r for r in no_retry if isinstance(r, Exception)]
    assert errors and all(isinstance(e, OverloadedError) for e in errors), errors
    assert all(e.status == 503 and e.retry_after is not None and e.request_id for e in errors)
    assert any(isinstance(r, np.ndarray) for r in no_retry)

    retried = _burst(tiny_queue_server, RetryPolicy(retries=20, backoff=0.05, max_backoff=2.0))
    assert all(isinstance(r, np.ndarray) and r.shape == (16, 7) for r in retried), retried
