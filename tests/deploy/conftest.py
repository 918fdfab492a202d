"""Deployment checks that run without a Docker engine: the compose file, the Dockerfiles, nginx's
configuration, and the images' processes started directly (docker/local_stack.py)."""
from __future__ import annotations

from types import ModuleType

import pytest

from deploy_helpers import COMPOSE_FILE, load_local_stack


@pytest.fixture(scope="session")
def compose() -> dict:
    """docker-compose.yml, parsed (anchors and merge keys resolved by PyYAML)."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def local_stack() -> ModuleType:
    return load_local_stack()
