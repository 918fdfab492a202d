"""Shared route helpers: read and decode a body into a request model, encode a response, OpenAPI docs."""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from amplify.inputs import InputError
from service.batching import Timing
from service.codecs import JSON, MSGPACK, decode_body, encode_body, media_type, response_type
from service.schemas import ErrorBody

M = TypeVar("M", bound=BaseModel)

# Bodies and responses above this size are decoded / encoded on a worker thread, not the event loop.
OFF_LOOP_BYTES = 256 * 1024


async def read_request(request: Request, model: type[M]) -> tuple[M, str]:
    """Decode the body (JSON or msgpack) into ``model``; -> (request, response encoding)."""
    encoding = media_type(request.headers.get("content-type"))
    body = await request.body()
    data = await run_in_threadpool(decode_body, body, encoding) if len(body) > OFF_LOOP_BYTES else decode_body(body, encoding)
    try:
        parsed = model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = "unknown field (see /docs for the accepted fields)" if first["type"] == "extra_forbidden" else first["msg"]
        raise InputError(f"{field}: {message}", field) from None
    return parsed, response_type(request.headers.get("accept"), encoding)


def record_timing(request: Request, timing: Timing) -> None:
    """Keep a request's model, queue and resume times for ``Server-Timing`` and the access log."""
    state = request.scope.setdefault("state", {})
    state["model_ms"] = timing.model_s * 1000
    state["queue_ms"] = timing.queue_s * 1000
    state["resume_ms"] = timing.resume_s * 1000
    state["batch_requests"] = timing.batch_requests


async def respond(request: Request, payload: dict[str, Any], encoding: str, timing: Timing | None = None) -> Response:
    """Encode ``payload`` and record the model and queue time for ``Server-Timing`` and the access log."""
    if timing is not None:
        record_timing(request, timing)
    size = sum(v.nbytes for v in payload.values() if isinstance(v, np.ndarray))
    body = await run_in_threadpool(encode_body, payload, encoding) if size > OFF_LOOP_BYTES // 4 else encode_body(payload, encoding)
    return Response(body, media_type=encoding)


def one_of(req: BaseModel, a: str, b: str) -> str:
    """The name of the one field of ``a``/``b`` that was sent; 400 when none or both."""
    has_a, has_b = getattr(req, a) is not None, getattr(req, b) is not None
    if has_a == has_b:
        raise InputError(f"send exactly one of `{a}` and `{b}`" + (" (both were sent)" if has_a else ""), a)
    return a if has_a else b


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that reads the body itself, in both encodings."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": schema},
        MSGPACK: {"schema": {**schema, "description": (schema.get("description") or "") +
                              " (msgpack: arrays as ndarray maps)"}},
    }}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input: the message names the field, the expected shape and what was received"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    404: {"model": ErrorBody, "description": "unknown instruction text (send text_emb)"},
    413: {"model": ErrorBody, "description": "body larger than the limit"},
    415: {"model": ErrorBody, "description": "unsupported Content-Type"},
    503: {"model": ErrorBody, "description": "queue full or not ready (Retry-After)"},
    504: {"model": ErrorBody, "description": "past the request timeout"},
}


