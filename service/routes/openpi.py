"""openpi's WebSocket policy protocol on the service's own port: ``ws://host:port/`` (what
``WebsocketClientPolicy(host, port)`` opens) and ``/openpi``; ``GET /healthz`` answers 200 as
openpi's server does.

A connection: API key check in the handshake (refused before any model work) -> the metadata
frame -> one binary frame per observation, answered by one binary frame ``{"actions": (A,
action_dim) float32, "server_timing": {...}}``. A bad observation gets one text frame (the error
object: code, message naming the field, field, request id) and the connection stays open; a fault
gets a text frame with the request id and close 1011. Observations go through the engine's batcher
with ``/act``'s requests, so robots on many connections share model calls.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.websockets import WebSocketDisconnect

from service.errors import InputError, ServiceError, error_body
from service.middleware import authorized
from service.protocols import openpi as P
from service.deps import service_state
from service.routes.common import OFF_LOOP_BYTES
from service.routes.ops import metadata_object

router = APIRouter(tags=["openpi"])
access_log = logging.getLogger("amplify.access")
log = logging.getLogger("amplify.service")

ENDPOINT = "/openpi"  # the metrics label of every frame, whichever path the connection opened
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL = 1011
CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008


@router.get("/healthz", response_class=PlainTextResponse, summary="200 while the process serves (openpi's health check)")
async def healthz() -> str:
    return "OK\n"


class Connections:
    """Open WebSocket connections of one app (bounded by ``ws_max_connections``)."""

    def __init__(self) -> None:
        self.open = 0


def _connections(ws: WebSocket) -> Connections:
    if not hasattr(ws.app.state, "openpi_connections"):
        ws.app.state.openpi_connections = Connections()
    return ws.app.state.openpi_connections


async def _refuse_unauthorized(ws: WebSocket) -> None:
    message = ("missing or wrong API key: send `Authorization: Api-Key <key>` (openpi-client's api_key), "
               "`Authorization: Bearer <key>` or `X-API-Key: <key>`")
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(PlainTextResponse(message, 401, headers={"WWW-Authenticate": "Bearer"}))
    else:
        await ws.close(CLOSE_POLICY, "unauthorized")


async def _wait_ready(ws: WebSocket, timeout_s: float):
    state = service_state(ws)
    deadline = time.monotonic() + timeout_s
    while state.status == "loading" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return state.ready_engine()


def _metadata_frame(ws: WebSocket, engine) -> dict[str, Any]:
    info = engine.info
    return {**metadata_object(service_state(ws)), "protocol": "openpi", "observation_keys": P.observation_keys(info),
            "reply": {"actions": f"float32 ({info.action_horizon}, {info.action_dim})",
                      "server_timing": "infer_ms (frame in -> reply out), queue_ms, model_ms, resume_ms (model done -> "
                                       "this connection's handler runs again), batch_requests, prev_total_ms"}}


def _prepare(frame: bytes, engine) -> tuple[dict[str, Any], str, int | None]:
    obs = P.decode_observation(frame)
    x, sampling, seed = P.act_inputs(obs, engine.info)
    if "text" in x:
        x["text_emb"] = engine.embed(x.pop("text"))
    return x, sampling, seed


@router.websocket("/")
@router.websocket("/openpi")
async def openpi_policy(ws: WebSocket) -> None:
    """One robot's connection (see the module docstring)."""
    state = service_state(ws)
    s, metrics = state.settings, state.metrics
    key = s.api_key.get_secret_value().encode() if s.api_key else None
    if key is not None and not authorized(Headers(scope=ws.scope), key):
        await _refuse_unauthorized(ws)
        return
    conns = _connections(ws)
    if conns.open >= s.ws_max_connections:
        await ws.accept()
        await ws.close(CLOSE_TRY_AGAIN, f"too many connections ({s.ws_max_connections}); retry later")
        return
    conns.open += 1
    metrics.ws_connections.inc()
    client = (ws.scope.get("client") or [None])[0]
    try:
        await ws.accept()
        try:
            engine = await _wait_ready(ws, s.request_timeout_s)
        except ServiceError as e:
            await ws.close(CLOSE_TRY_AGAIN, e.message[:120])
            return
        await ws.send_bytes(P.pack_frame(_metadata_frame(ws, engine)))
        prev_total_ms: float | None = None
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), s.ws_idle_timeout_s)
            except asyncio.TimeoutError:
                await ws.close(1000, f"idle for {s.ws_idle_timeout_s:g} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            start = time.perf_counter()
            request_id = uuid.uuid4().hex
            frame = message.get("bytes")
            status, timing = 200, None
            try:
                if frame is None:
                    raise InputError("send observations as binary msgpack frames (this was a text frame)", None)
                if len(frame) > s.max_body_bytes:
                    status = 413
                    await ws.send_text(json.dumps(error_body("payload_too_large", f"the frame ({len(frame)} bytes) is "
                                                             f"larger than the limit of {s.max_body_bytes} bytes", None,
                                                             request_id)))
                    await ws.close(CLOSE_TOO_BIG, "frame too large")
                    return
                with engine.arriving():  # as /act's: a small frame decodes and validates on the event loop
                    if len(frame) <= OFF_LOOP_BYTES:  # (well under a millisecond), sparing two thread hops;
                        x, sampling, seed = _prepare(frame, engine)
                    else:  # a larger one (a big batch of images) off it
                        x, sampling, seed = await run_in_threadpool(_prepare, frame, engine)
                out, timing = await engine.act(x["images"], x["proprio"], x["text_emb"], sampling, seed)
                infer_ms = (time.perf_counter() - start) * 1000
                server_timing = {"infer_ms": infer_ms, "queue_ms": timing.queue_s * 1000,
                                 "model_ms": timing.model_s * 1000, "resume_ms": timing.resume_s * 1000,
                                 "batch_requests": timing.batch_requests}
                if prev_total_ms is not None:
                    server_timing["prev_total_ms"] = prev_total_ms
                await ws.send_bytes(P.pack_frame({"actions": out["actions"][0], "server_timing": server_timing,
                                                  "request_id": request_id}))
            except (ServiceError, InputError) as e:  # bad observation, unknown instruction, queue full, timeout
                status = getattr(e, "status", 400)      # (the connection keeps serving)
                code = getattr(e, "code", "invalid_input")
                await ws.send_text(json.dumps(error_body(code, e.message, e.field, request_id)))
            except WebSocketDisconnect:
                raise
            except Exception:
                status = 500
                log.exception("openpi frame failed (request %s)", request_id)
                await ws.send_text(json.dumps(error_body("internal_error", f"internal server error; quote request id "
                                                         f"{request_id}", None, request_id)))
                await ws.close(CLOSE_INTERNAL, f"internal server error; request id {request_id}")
                return
            finally:
                seconds = time.perf_counter() - start
                prev_total_ms = seconds * 1000
                metrics.observe_request(ENDPOINT, "WS", status, seconds)
                access_log.info("request", extra={"fields": {
                    "request_id": request_id, "method": "WS", "path": ws.url.path, "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "model_ms": round(timing.model_s * 1000, 3) if timing else 0.0,
                    "queue_ms": round(timing.queue_s * 1000, 3) if timing else 0.0,
                    "batch_requests": timing.batch_requests if timing else None, "client": client}})
    except WebSocketDisconnect:
        pass
    finally:
        conns.open -= 1
        metrics.ws_connections.dec()
