"""Property-based fuzzing of every endpoint from the service's own OpenAPI schema (schemathesis).

Schemathesis generates bodies that fit the schema (positive) and bodies that break it (negative),
in JSON and msgpack, for every operation. Every answer must be a documented status and never a
5xx; schema-breaking bodies must be refused with a 4xx. The number of examples is bounded so this
part takes well under a minute (no shrinking: a failure shows the example as generated); the service then still answers correctly.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error, status_code_conformance

from tests.reliability.harness import EXPECTED_FIELD, JSON, MSGPACK, check_answer, encode, valid_payloads

pytestmark = pytest.mark.timeout(300)  # a hang is a failure, not a stuck suite

MAX_EXAMPLES = 40
SEEN: Counter = Counter()  # (media type, status class) of every fuzzed POST


def _packable(x: Any) -> Any:
    """What msgpack can carry: ints beyond 64 bits become floats, schemathesis' Binary its bytes."""
    if isinstance(x, dict):
        return {k: _packable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_packable(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool) and not -2**63 <= x < 2**64:
        return float(x)
    if not isinstance(x, (bytes, str)) and isinstance(getattr(x, "data", None), bytes):
        return x.data
    return x


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx, value) -> bytes:
    return msgpack.packb(_packable(value), use_bin_type=True)


OPERATIONS = [("POST", p) for p in EXPECTED_FIELD] + [("GET", p) for p in ("/health", "/ready", "/metadata", "/metrics")]
MODES = {"positive": GenerationMode.POSITIVE, "negative": GenerationMode.NEGATIVE}


class WithoutLifespan:
    """The app minus its lifespan: schemathesis' per-call test clients would otherwise start and
    stop the (already running) engine around every call."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def fuzz_client(make_client):
    """A ready app of its own for this module."""
    with make_client() as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(fuzz_client):
    """The app's own /openapi.json, called in-process (ASGI)."""
    return schemathesis.openapi.from_asgi("/openapi.json", WithoutLifespan(fuzz_client.app))


def test_schema_covers_every_endpoint(api_schema) -> None:
    ops = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert set(OPERATIONS) <= ops, set(OPERATIONS) - ops


# GET operations take no input to break: positive only.
FUZZ = [(m, p, mode) for m, p in OPERATIONS for mode in sorted(MODES) if m == "POST" or mode == "positive"]


@pytest.mark.parametrize("method,path,mode", FUZZ, ids=[f"{m} {p} {mode}" for m, p, mode in FUZZ])
def test_fuzz_endpoint(api_schema, method: str, path: str, mode: str) -> None:
    operation = api_schema[path][method]
    examples = MAX_EXAMPLES if method == "POST" else 3

    @given(case=operation.as_strategy(generation_mode=MODES[mode]))
    @settings(max_examples=examples, phases=[Phase.explicit, Phase.generate], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call()
        if method == "POST":
            SEEN[(case.media_type, response.status_code // 100)] += 1
        checks = [not_a_server_error, status_code_conformance] + ([negative_data_rejection] if mode == "negative" else [])
        case.validate_response(response, checks=checks)
        if response.status_code >= 400:
            assert "Traceback (most recent call last)" not in response.text
            assert response.json()["error"]["request_id"] == response.headers["x-request-id"][0]

    run()


def test_answers_correctly_after_fuzzing(fuzz_client) -> None:
    client = fuzz_client
    # Both encodings were fuzzed, and everything was answered with a 2xx or 4xx.
    assert SEEN[(JSON, 4)] > 50 and SEEN[(MSGPACK, 4)] > 50, SEEN
    assert {status for _, status in SEEN} <= {2, 4}, SEEN
    meta = client.get("/metadata").json()
    for path, payload in valid_payloads(meta).items():
        for enc in (JSON, MSGPACK):
            check_answer(path, client.post(path, content=encode(payload, enc), headers={"content-type": enc}))
    assert set(EXPECTED_FIELD) == set(valid_payloads(meta))
