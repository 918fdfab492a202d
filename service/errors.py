"""Service errors and their HTTP form: ``{"error": {"code", "message", "field", "request_id"}}``.

Inference code raises the library's :class:`amplify.inputs.InputError` (bad values, 400; the one
InputError, re-exported here) and :class:`UnknownInstruction` (404); the batcher raises
:class:`QueueFull` (503) and :class:`RequestTimeout` (504). The HTTP layer (``service.app``) maps
them and adds ``Retry-After`` to the 503s; anything else is a 500 with the request id and no traceback.
"""
from __future__ import annotations

from typing import Any

from amplify.inputs import InputError

__all__ = ["InputError", "NotReady", "PayloadTooLarge", "QueueFull", "RequestTimeout", "ServiceError",
           "UnknownInstruction", "UnsupportedMediaType", "error_body"]


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


class UnknownInstruction(ServiceError):
    """Instruction text that neither the bundle's table nor a text encoder can embed (404)."""

    status, code = 404, "unknown_instruction"


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


# Seconds a client should wait before retrying a 503 (queue full, not ready, shutting down).
RETRY_AFTER_S = 1


def response_headers(err: ServiceError) -> dict[str, str]:
    """The HTTP headers of an error response: ``Retry-After`` on every 503, and the error's own."""
    return {**({"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else {}), **err.headers}


def error_body(code: str, message: str, field: str | None, request_id: str | None) -> dict[str, Any]:
    """The contract's error object."""
    return {"error": {"code": code, "message": message, "field": field, "request_id": request_id}}
