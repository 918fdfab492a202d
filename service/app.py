"""The application factory: ``create_app(settings)``.

The model loads on a background thread when the application starts, so ``/health`` answers at once
and ``/ready`` turns 200 only after loading and warm-up. Inference runs on the engine's worker
thread, never on the event loop.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from amplify.inputs import InputError
from service.backends import Backend, load_backend
from service.deps import ServiceState
from service.engine import InferenceEngine
from service.errors import ServiceError, error_body, response_headers
from service.metrics import ServiceMetrics
from service.middleware import ServiceMiddleware
from service.routes import inference, ops
from service.settings import ServiceSettings
from service.text import LocalTextEncoder, TextResolver

log = logging.getLogger("amplify.service")

BackendFactory = Callable[[ServiceSettings], Backend]

DESCRIPTION = """
AMPLIFY inference: motion tokenizer (`/encode`, `/decode`), forward dynamics (`/predict_codes`,
`/predict_traj`) and the full policy (`/act`).

**Encodings.** Bodies are JSON (`application/json`) or msgpack (`application/msgpack`), chosen by
`Content-Type`; the response follows `Accept`, else the request's type. An array is nested lists in
JSON, and in msgpack the map `{"__ndarray__": true, "dtype": "<f4", "shape": [...], "data": <bytes>}`
(little-endian, C order; dtypes `<f2 <f4 <f8` for floats, `|u1` for images, `<i4 <i8` for indices).

**Shapes** (GET `/metadata` gives the loaded model's): b batch, v views, H points per track,
t = H - 1, n tracks, S code tokens, h hidden size, A action horizon, E text-embedding size. Images
are (b, v, H_img, W_img, 3) uint8 0-255 or float 0-1, upright, in `/metadata` `views` order.

**Errors** are `{"error": {"code", "message", "field", "request_id"}}`: 400 bad input, 401 API key,
404 unknown instruction, 413 body too large, 415 content type, 503 queue full or not ready
(`Retry-After`), 504 timeout. Every response carries `X-Request-ID` and `Server-Timing`.
"""


def _default_factory(settings: ServiceSettings) -> Backend:
    return load_backend(settings.backend, settings.model, settings.device, settings.threads, settings.untrained_seed)


def _load(state: ServiceState, factory: BackendFactory, on_failure: Callable[[BaseException], None] | None) -> None:
    s = state.settings
    try:
        start = time.perf_counter()
        backend = factory(s)
        instructions, table = backend.instruction_table()
        encoder = (LocalTextEncoder(s.text_encoder, backend.info.text_embedding_dim, s.device)
                   if s.text_encoder else None)
        engine = InferenceEngine(backend, TextResolver(instructions, table, encoder), s.max_batch_size, s.max_wait_ms,
                                 s.queue_size, s.request_timeout_s, observer=state.metrics.observe_batch)
        state.load_seconds = time.perf_counter() - start
        if s.warmup:
            state.warmup_seconds = engine.warm_up()
        engine.start()
        state.metrics.track_queue_depth(engine.batcher.depth)
        state.engine = engine
        state.status = "ready"
        state.metrics.ready.set(1)
        meta = backend.model_metadata()
        log.info("model ready", extra={"fields": {
            "model": meta.get("name"), "version": meta.get("version"), "backend": backend.name, "device": backend.device,
            "trained": meta.get("trained", True), "load_s": round(state.load_seconds, 3),
            "warmup_s": round(state.warmup_seconds or 0.0, 3)}})
    except BaseException as e:  # reported on /ready and to the caller (the CLI exits)
        state.status, state.error = "failed", f"{type(e).__name__}: {e}"
        log.error("model failed to load: %s", state.error)
        if on_failure is not None:
            on_failure(e)


def create_app(settings: ServiceSettings | None = None, backend_factory: BackendFactory | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """Build the application. ``backend_factory(settings) -> Backend`` replaces the default loader
    (tests use it to hold or slow loading); ``on_load_failure`` is told when loading fails."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    state = ServiceState(settings, metrics)
    factory = backend_factory or _default_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=_load, args=(state, factory, on_load_failure), name="amplify-loader", daemon=True)
        loader.start()
        app.state.loader = loader
        yield
        if state.engine is not None:
            state.engine.stop()

    app = FastAPI(title="AMPLIFY inference service", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.service = state
    app.include_router(inference.router)
    app.include_router(ops.router)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes, api_key=api_key)

    def _rid(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field, _rid(request)), exc.status,
                            headers=response_headers(exc))

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", exc.message, exc.field, _rid(request)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail), None, _rid(request)), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body("invalid_input", first.get("msg", "invalid request"), field, _rid(request)), 400)

    return app
