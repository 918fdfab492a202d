"""One pure-ASGI middleware for every HTTP request: request id, API key, body-size limit (enforced
while the body is read), in-flight gauge, request metrics, ``Server-Timing`` and a JSON access log.
It also turns any unhandled exception into a 500 with the request id and no traceback.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError, error_body, response_headers
from service.metrics import ServiceMetrics
from service.protocols.v2 import V2_ENDPOINTS

access_log = logging.getLogger("amplify.access")
log = logging.getLogger("amplify.service")

ENDPOINTS = {"/encode", "/decode", "/predict_codes", "/predict_traj", "/act", "/health", "/ready", "/metadata",
             "/metrics", "/docs", "/openapi.json", "/redoc", "/healthz", *V2_ENDPOINTS}
OPEN_PATHS = {"/health", "/ready", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect", "/healthz",
              "/v2/health/live", "/v2/health/ready"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

# The Swagger UI / ReDoc scripts and styles the /docs and /redoc pages load (served by the service).
DOCS_ASSETS_URL = "/docs/assets"
OPEN_PREFIXES = (DOCS_ASSETS_URL + "/",)


def authorized(headers: Headers, api_key: bytes) -> bool:
    """Whether the request carries ``api_key`` as ``X-API-Key``, ``Authorization: Bearer <key>`` or
    ``Authorization: Api-Key <key>`` (openpi-client's header); compared in constant time."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if given is None and scheme.lower() in ("bearer", "api-key"):
        given = value.strip()
    return given is not None and hmac.compare_digest(given.encode(), api_key)


class ServiceMiddleware:
    """See the module docstring. ``api_key`` None disables authentication."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int, api_key: str | None = None):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None

    def _authorized(self, headers: Headers) -> bool:
        return authorized(headers, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = Headers(scope=scope)
        given_id = headers.get("x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = [500]
        started = [False]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
                status[0] = message["status"]
                h = MutableHeaders(scope=message)
                h["X-Request-ID"] = request_id
                total_ms = (time.perf_counter() - start) * 1000
                timing = f"model;dur={state.get('model_ms', 0.0):.3f}"
                if "queue_ms" in state:
                    timing += f", queue;dur={state['queue_ms']:.3f}"
                if "resume_ms" in state:
                    timing += f", resume;dur={state['resume_ms']:.3f}"
                h["Server-Timing"] = timing + f", total;dur={total_ms:.3f}"
            await send(message)

        async def send_error(err: ServiceError) -> None:
            if path.startswith("/v2"):  # KServe v2 / Open Inference Protocol errors are {"error": "<message>"}
                body = json.dumps({"error": err.message}).encode()
            else:
                body = json.dumps(error_body(err.code, err.message, err.field, request_id)).encode()
            await send_with_headers({"type": "http.response.start", "status": err.status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in response_headers(err).items())]})
            await send_with_headers({"type": "http.response.body", "body": body})

        received = [0]

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body is larger than the limit of {self.max_body_bytes} bytes", None)
            return message

        self.metrics.in_flight.inc()
        try:
            if (self.api_key is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)
                    and not self._authorized(headers)):
                await send_error(ServiceError("missing or wrong API key: send `Authorization: Bearer <key>`, "
                                              "`Authorization: Api-Key <key>` or `X-API-Key: <key>`", "Authorization", status=401, code="unauthorized",
                                              headers={"WWW-Authenticate": "Bearer"}))
                return
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await send_error(PayloadTooLarge(
                    f"the body ({length} bytes) is larger than the limit of {self.max_body_bytes} bytes", None))
                return
            await self.app(scope, limited_receive, send_with_headers)
        except ServiceError as e:  # raised outside a route (e.g. the body limit while reading)
            if not started[0]:
                await send_error(e)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), path, request_id)
            if not started[0]:
                await send_error(ServiceError(f"internal server error; quote request id {request_id}", None))
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            self.metrics.observe_request(endpoint, scope.get("method", ""), status[0], seconds)
            access_log.info("request", extra={"fields": {
                "request_id": request_id, "method": scope.get("method"), "path": path, "status": status[0],
                "duration_ms": round(seconds * 1000, 3), "model_ms": round(state.get("model_ms", 0.0), 3),
                "queue_ms": round(state.get("queue_ms", 0.0), 3), "batch_requests": state.get("batch_requests"),
                "client": (scope.get("client") or [None])[0]}})
