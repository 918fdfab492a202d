"""Light clients for amplify-serve: numpy in and out over HTTP (msgpack or JSON), openpi's WebSocket
policy protocol or KServe v2 (``connect(url, protocol="http" | "openpi" | "v2")``).

Imports only numpy, httpx and msgpack (and websockets for the openpi client). It is its own distribution (``pip install ./clients``, see
``clients/pyproject.toml``; no torch): a robot controller can use it as it is.

    from clients import AmplifyClient
    client = AmplifyClient("http://127.0.0.1:8000", expect_action_dim=7)
    actions = client.act(images, proprio, text="put the bowl on the plate")
"""
from clients.client import AmplifyClient, AsyncAmplifyClient, Expectations, RetryPolicy
from clients.errors import (
    AmplifyError, AuthenticationError, BadRequestError, ConnectionFailedError, IncompatibleModelError,
    NotFoundError, OverloadedError, PayloadTooLargeError, RequestTimeoutError, ServerError,
    UnsupportedMediaTypeError, UnsupportedOperationError,
)
from clients.protocols import PROTOCOLS, client_class, connect


def __getattr__(name: str):  # the openpi and v2 clients load on first use (openpi's needs websockets)
    if name == "OpenPIClient":
        from clients.openpi import OpenPIClient
        return OpenPIClient
    if name in ("V2Client", "AsyncV2Client"):
        from clients import v2
        return getattr(v2, name)
    raise AttributeError(name)


__all__ = [
    "AmplifyClient", "AsyncAmplifyClient", "Expectations", "RetryPolicy", "AmplifyError", "AuthenticationError",
    "BadRequestError", "ConnectionFailedError", "IncompatibleModelError", "NotFoundError", "OverloadedError",
    "PayloadTooLargeError", "RequestTimeoutError", "ServerError", "UnsupportedMediaTypeError",
    "UnsupportedOperationError", "OpenPIClient", "V2Client", "AsyncV2Client", "PROTOCOLS", "client_class", "connect",
]
