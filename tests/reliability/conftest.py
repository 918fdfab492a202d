"""Fixtures of the reliability tests: a small random bundle on disk, its loaded back end, the
service app in-process (one model load shared by every app built here), and a live server process."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from tests.reliability.harness import ServerProcess


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """A random ``small`` bundle in the project format (what ``amplify init --preset small`` writes)."""
    from amplify.policy import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundle") / "small"
    AMPLIFY(small()).eval().save(out, {"name": "reliability-small", "trained": False})
    return out


@pytest.fixture(scope="session")
def torch_backend(bundle_dir):
    """The service's torch back end on the bundle, loaded once."""
    from service.backends.torch_backend import TorchBackend

    return TorchBackend.load(str(bundle_dir), threads=1)


class _Shared:
    """Hands a loaded back end to create_app without letting the app close it on shutdown."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def make_client(torch_backend) -> Callable[..., Any]:
    """``with make_client(**settings) as client``: a TestClient on a ready app (lifespan run) built
    with ``ServiceSettings(**settings)``; ``backend`` replaces the shared back end."""
    from service.app import create_app
    from service.settings import ServiceSettings

    @contextmanager
    def factory(backend=None, **settings: Any) -> Iterator[TestClient]:
        s = ServiceSettings(warmup=False, **settings)
        app = create_app(s, backend_factory=lambda _: backend or _Shared(torch_backend))
        with TestClient(app, raise_server_exceptions=False) as client:
            app.state.loader.join(60)
            assert app.state.service.status == "ready", app.state.service.error
            yield client

    return factory


@pytest.fixture(scope="session")
def client(make_client) -> Iterator[TestClient]:
    """The in-process service with default settings."""
    with make_client() as c:
        yield c


@pytest.fixture(scope="session")
def live_server(bundle_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """A real ``amplify serve`` process on the bundle (shared by the tests that need sockets)."""
    with ServerProcess(bundle_dir, log_dir=tmp_path_factory.mktemp("live")) as server:
        yield server
