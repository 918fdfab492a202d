"""Light clients for amplify-serve: numpy in and out over HTTP (msgpack or JSON).

Imports only numpy, httpx and msgpack. It is its own distribution (``pip install ./clients``, see
``clients/pyproject.toml``; no torch): a robot controller can use it as it is.

    from clients import AmplifyClient
    client = AmplifyClient("http://127.0.0.1:8000", expect_action_dim=7)
    actions = client.act(images, proprio, text="put the bowl on the plate")
"""
from clients.client import AmplifyClient, AsyncAmplifyClient, Expectations, RetryPolicy
from clients.errors import (
    AmplifyError, AuthenticationError, BadRequestError, ConnectionFailedError, IncompatibleModelError,
    NotFoundError, OverloadedError, PayloadTooLargeError, RequestTimeoutError, ServerError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "AmplifyClient", "AsyncAmplifyClient", "Expectations", "RetryPolicy", "AmplifyError", "AuthenticationError",
    "BadRequestError", "ConnectionFailedError", "IncompatibleModelError", "NotFoundError", "OverloadedError",
    "PayloadTooLargeError", "RequestTimeoutError", "ServerError", "UnsupportedMediaTypeError",
]
