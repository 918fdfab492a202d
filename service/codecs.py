"""Request and response bodies over HTTP: the content negotiation (``Content-Type``, ``Accept``) and
the mapping of wire errors to 400. The wire format itself is the clients' codec
(:mod:`clients.codec`): one codec for both sides, so a client and the server can never disagree on it.
"""
from __future__ import annotations

from typing import Any

from clients.codec import (
    ACCEPTED_DTYPES, JSON, MAX_DIM, MAX_NDIM, MSGPACK, WireError, body_format, encode_body, pack_array, parse_body,
)
from service.errors import InputError, UnsupportedMediaType

__all__ = ["ACCEPTED_DTYPES", "JSON", "MAX_DIM", "MAX_NDIM", "MSGPACK", "decode_body", "encode_body", "media_type",
           "pack_array", "response_type"]


def media_type(content_type: str | None) -> str:
    """The body's encoding from ``Content-Type``; 415 for anything but JSON or msgpack."""
    fmt = body_format(content_type)
    if fmt is None:
        base = (content_type or "").split(";")[0].strip().lower()
        raise UnsupportedMediaType(f"Content-Type {base!r} is not supported; send {JSON} or {MSGPACK}", "Content-Type")
    return fmt


def response_type(accept: str | None, request_type: str) -> str:
    """The response encoding: what ``Accept`` names, else the request's encoding."""
    for part in (accept or "").split(","):
        base = part.split(";")[0].strip()
        fmt = body_format(base) if base else None
        if fmt is not None:
            return fmt
    return request_type


def decode_body(body: bytes, encoding: str) -> dict[str, Any]:
    """Bytes -> a dict of fields (msgpack ndarray maps become read-only numpy arrays); 400 names the field."""
    if not body:
        raise InputError("the request body is empty; send a JSON or msgpack object", None)
    try:
        data = parse_body(body, encoding)
    except WireError as e:
        raise InputError(e.message, e.field) from None
    if not isinstance(data, dict):
        raise InputError(f"the body must be an object (map) of fields, got {type(data).__name__}", None)
    return data
