"""Service test helpers: a live uvicorn server (real HTTP) on a free port, request bodies, results."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator

import httpx
import msgpack
import numpy as np
import torch
import uvicorn

from service.app import create_app
from service.codecs import pack_array
from service.settings import ServiceSettings




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``create_app(settings, factory)`` served by uvicorn on a thread; ``client`` talks real HTTP."""

    def __init__(self, settings: ServiceSettings, backend_factory=None, wait_ready: bool = True):
        self.port = free_port()
        self.app = create_app(settings, backend_factory)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_ready = wait_ready

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        if self.wait_ready:
            self.await_ready()
        return self

    def await_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.client.get("/ready").status_code != 200:
            state = self.app.state.service
            if state.status == "failed" or time.time() > deadline:
                raise RuntimeError(f"the model did not become ready: {state.error}")
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def live_server(backend_factory=None, wait_ready: bool = True, **settings: Any) -> Iterator[LiveServer]:
    with LiveServer(ServiceSettings(**settings), backend_factory, wait_ready) as server:
        yield server


def msgpack_body(fields: dict[str, Any]) -> bytes:
    return msgpack.packb({k: pack_array(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()})


def unpack(content: bytes) -> dict[str, Any]:
    out = {}
    for k, v in msgpack.unpackb(content).items():
        out[k] = (np.frombuffer(v["data"], np.dtype(v["dtype"])).reshape(v["shape"])
                  if isinstance(v, dict) and v.get("__ndarray__") else v)
    return out


def post(client: httpx.Client, path: str, fields: dict[str, Any], encoding: str = "json", **kw: Any) -> httpx.Response:
    """POST ``fields`` (numpy arrays allowed) as JSON or msgpack."""
    if encoding == "json":
        body = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in fields.items()}
        return client.post(path, json=body, **kw)
    headers = {"content-type": "application/msgpack", **kw.pop("headers", {})}
    return client.post(path, content=msgpack_body(fields), headers=headers, **kw)


def result(response: httpx.Response) -> dict[str, Any]:
    """The response's fields with arrays as numpy, whichever the encoding."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/msgpack"):
        return unpack(response.content)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in response.json().items()}




def untrained_backend():
    """A random small bundle (seed 0) on the torch back end, independent of $AMPLIFY_HOME."""
    from amplify import AMPLIFY
    from amplify.presets import small
    from service.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    return TorchBackend(AMPLIFY(small()).eval(), {"name": "untrained-small", "version": "seed-0", "format": "random",
                                                  "trained": False})
