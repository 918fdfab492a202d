"""Service errors and their HTTP form: ``{"error": {"code", "message", "field", "request_id"}}``.

Inference code raises :class:`InputError` (bad values, 400) and :class:`UnknownInstruction` (404);
the batcher raises :class:`QueueFull` (503) and :class:`RequestTimeout` (504). The HTTP layer maps
them; anything else is a 500 with the request id and no traceback.
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with an HTTP status, a stable code, a message and the request field it concerns."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, field: str | None = None, *, status: int | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status or type(self).status
        self.code = code or type(self).code
        self.headers = headers or {}


class InputError(ServiceError):
    """Malformed body, wrong shape or dtype, non-finite or out-of-range values (400)."""

    status, code = 400, "invalid_input"


class UnknownInstruction(ServiceError):
    """Instruction text that neither the bundle's table nor a text encoder can embed (404)."""

    status, code = 404, "unknown_instruction"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class QueueFull(ServiceError):
    """The model's queue is full: retry later (503 with Retry-After)."""

    status, code = 503, "queue_full"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


class RequestTimeout(ServiceError):
    status, code = 504, "timeout"


def error_body(code: str, message: str, field: str | None, request_id: str | None) -> dict[str, Any]:
    """The contract's error object."""
    return {"error": {"code": code, "message": message, "field": field, "request_id": request_id}}
