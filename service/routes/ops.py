"""Operations endpoints: /health, /ready, /metadata, /metrics."""
from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import ServiceState, State
from service.metrics import CONTENT_TYPE_LATEST
from service.schemas import Metadata, Status

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Status, response_model_exclude_none=True, summary="200 while the process serves")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", response_model=Status, summary="200 once the model is loaded and warm, else 503",
            responses={503: {"model": Status, "description": "loading, or the load failed"}})
async def ready(state: State) -> JSONResponse:
    if state.status == "ready":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": state.status, "detail": state.error}, 503, headers={"Retry-After": "1"})


def metadata_object(state: ServiceState) -> dict:
    """The /metadata object (also openpi's first frame and the v2 model metadata's ``amplify`` key)."""
    engine = state.ready_engine()
    backend, s = engine.backend, state.settings
    meta = backend.model_metadata()
    # closed-loop figures, the actions to run per chunk and the gripper latch, when the model records them
    extra = {key: meta[key] for key in ("evaluation", "execute", "gripper_hold") if meta.get(key)}
    return {
        **extra,
        "model": {"name": meta["name"], "version": meta["version"], "format": meta["format"]},
        "backend": backend.name, "device": backend.device, "precision": backend.precision, **engine.info.as_metadata(),
        "instructions": engine.text.instructions,
        "batching": {"max_batch_size": s.max_batch_size, "max_wait_ms": s.max_wait_ms},
        "trained": meta.get("trained"),
        "sampling": list(backend.sampling_modes),
        "text_encoder": str(s.text_encoder) if s.text_encoder else None,
    }


@router.get("/metadata", response_model=Metadata, summary="What the loaded model takes and returns")
async def metadata(state: State) -> dict:
    return metadata_object(state)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
