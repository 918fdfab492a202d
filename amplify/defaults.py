"""Where the default bundle lives: ``$AMPLIFY_HOME/default`` (``AMPLIFY_HOME`` defaults to
``~/.cache/amplify-serve``). ``amplify serve`` with no model serves it when it exists."""
from __future__ import annotations

import os
from pathlib import Path


def amplify_home() -> Path:
    """The directory for models the project builds or caches for the user."""
    return Path(os.environ.get("AMPLIFY_HOME", Path.home() / ".cache" / "amplify-serve"))


def default_bundle_dir() -> Path:
    """The default bundle's directory (it may not exist yet)."""
    return amplify_home() / "default"
