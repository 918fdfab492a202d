"""Paths and helpers of the deployment tests (a module of its own: ``conftest`` is a name every
test folder uses)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_CONF = DOCKER / "nginx" / "nginx.conf"
SERVICE_DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
DOCKERFILES = SERVICE_DOCKERFILES + [DOCKER / "Dockerfile.libero"]


def load_local_stack() -> ModuleType:
    """docker/local_stack.py as a module (docker/ is not a package)."""
    name = "amplify_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCKER / "local_stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
