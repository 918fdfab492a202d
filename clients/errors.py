"""Typed errors: every error body ``{"error": {code, message, field, request_id}}`` becomes one."""
from __future__ import annotations


class AmplifyError(Exception):
    """Base of every client error. ``status`` is the HTTP status (None when no response came)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 field: str | None = None, request_id: str | None = None, retry_after: float | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.retry_after = retry_after
        parts = [f"{status}" if status else None, code, message,
                 f"field={field}" if field else None, f"request_id={request_id}" if request_id else None]
        super().__init__(" | ".join(p for p in parts if p))

    def __reduce__(self):  # keep the details across processes (the robot client's env workers)
        return (_rebuild, (type(self), self.message, self.status, self.code, self.field, self.request_id,
                           self.retry_after))


def _rebuild(cls, message, status, code, field, request_id, retry_after):
    return cls(message, status=status, code=code, field=field, request_id=request_id, retry_after=retry_after)


class BadRequestError(AmplifyError):
    """400: malformed body, wrong shape or dtype, non-finite or out-of-range values."""


class AuthenticationError(AmplifyError):
    """401: missing or wrong API key."""


class NotFoundError(AmplifyError):
    """404: e.g. an unknown instruction text and no text encoder on the server."""


class PayloadTooLargeError(AmplifyError):
    """413: the body is larger than the server's limit."""


class UnsupportedMediaTypeError(AmplifyError):
    """415: content type the server does not accept."""


class OverloadedError(AmplifyError):
    """429 / 503: queue full or not ready; raised after the retries are spent."""


class RequestTimeoutError(AmplifyError):
    """504 from the server, or the client's own timeout."""


class ServerError(AmplifyError):
    """500 and other 5xx: a fault in the server."""


class ConnectionFailedError(AmplifyError):
    """No response: the server could not be reached (after the retries)."""


class UnsupportedOperationError(AmplifyError):
    """The protocol cannot carry this call (openpi's WebSocket protocol carries ``act`` only)."""


class IncompatibleModelError(AmplifyError):
    """The served model's ``/metadata`` does not match what this client was told to expect."""


_BY_STATUS: dict[int, type[AmplifyError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError, 429: OverloadedError, 503: OverloadedError, 504: RequestTimeoutError,
}


# The contract's error codes -> the HTTP status they travel with (for protocols without statuses).
STATUS_OF_CODE: dict[str, int] = {
    "invalid_input": 400, "unauthorized": 401, "unknown_instruction": 404, "not_found": 404, "payload_too_large": 413,
    "unsupported_media_type": 415, "queue_full": 503, "not_ready": 503, "timeout": 504, "internal_error": 500,
}


def error_for(status: int, body: object, request_id: str | None = None,
              retry_after: float | None = None) -> AmplifyError:
    """The typed error for an HTTP status and a parsed error body (which may be anything)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": str(body)[:500] if body else f"HTTP {status}"}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else AmplifyError)
    return cls(str(err.get("message") or f"HTTP {status}"), status=status, code=err.get("code"),
               field=err.get("field"), request_id=err.get("request_id") or request_id, retry_after=retry_after)
