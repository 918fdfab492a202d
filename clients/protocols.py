"""One constructor for the three protocols the service speaks, with the same numpy methods:

- ``"http"``: this project's HTTP contract (:class:`~clients.AmplifyClient`; every endpoint);
- ``"openpi"``: openpi's WebSocket policy protocol (:class:`~clients.OpenPIClient`; ``act`` only);
- ``"v2"``: KServe v2 / Open Inference Protocol (:class:`~clients.V2Client`; also Triton serving the export).

    from clients import connect
    client = connect("http://127.0.0.1:8000", protocol="v2", api_key=key, expect_action_dim=7)
"""
from __future__ import annotations

from typing import Any

PROTOCOLS = ("http", "openpi", "v2")


def client_class(protocol: str, asynchronous: bool = False) -> type:
    """The client class of ``protocol`` (the asyncio one with ``asynchronous``; openpi has none)."""
    if protocol == "http":
        from clients.client import AmplifyClient, AsyncAmplifyClient
        return AsyncAmplifyClient if asynchronous else AmplifyClient
    if protocol == "openpi":
        if asynchronous:
            raise ValueError("the openpi protocol has no asyncio client here; use protocol='http' or 'v2'")
        from clients.openpi import OpenPIClient
        return OpenPIClient
    if protocol == "v2":
        from clients.v2 import AsyncV2Client, V2Client
        return AsyncV2Client if asynchronous else V2Client
    raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {protocol!r}")


def connect(base_url: str = "http://127.0.0.1:8000", protocol: str = "http", **kwargs: Any) -> Any:
    """A blocking client of ``protocol`` (keyword arguments as the class takes them)."""
    return client_class(protocol)(base_url, **kwargs)
