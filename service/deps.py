"""The service's state and the typed dependencies routes take (``Annotated[..., Depends(...)]``), so
that routes never import the application factory.

    @router.get("/x")
    async def x(state: State, engine: Engine): ...

``service.app.create_app`` makes one :class:`ServiceState` and stores it on ``app.state.service``.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import InferenceEngine
from service.errors import NotReady
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings


class ServiceState:
    """What the routes see: settings, metrics and (once loaded) the engine."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self.engine: InferenceEngine | None = None
        self.status = "loading"
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None

    def ready_engine(self) -> InferenceEngine:
        """The engine, or 503 while loading (or after a failed load)."""
        if self.status != "ready" or self.engine is None:
            detail = f": {self.error}" if self.error else "; retry shortly"
            raise NotReady(f"the model is {self.status}{detail}", None)
        return self.engine


def service_state(request: Request) -> ServiceState:
    """The application's :class:`ServiceState`."""
    return request.app.state.service


def ready_engine(request: Request) -> InferenceEngine:
    """The loaded engine; 503 (``NotReady``) while the model loads or after it failed to."""
    return service_state(request).ready_engine()


State = Annotated[ServiceState, Depends(service_state)]
Engine = Annotated[InferenceEngine, Depends(ready_engine)]
