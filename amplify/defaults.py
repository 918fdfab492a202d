"""Where the default model lives.

* ``default_bundle_dir()``: ``$AMPLIFY_HOME/default`` (``AMPLIFY_HOME`` defaults to
  ``~/.cache/amplify-serve``), where ``amplify build-default`` writes the bundle it builds;
* ``shipped_bundle_dir()``: ``amplify/default_model``, the bundle shipped with the package (one build of
  ``amplify build-default``, weights stored as float16; ``python -m training.ship_default`` makes it);
* ``default_model_dir()``: what ``amplify serve`` and ``amplify eval-world`` use when no model is
  named: the user's build when it exists, else the shipped bundle.
"""
from __future__ import annotations

import os
from pathlib import Path


def amplify_home() -> Path:
    """The directory for models the project builds or caches for the user."""
    return Path(os.environ.get("AMPLIFY_HOME", Path.home() / ".cache" / "amplify-serve"))


def default_bundle_dir() -> Path:
    """The directory ``amplify build-default`` writes to (it may not exist yet)."""
    return amplify_home() / "default"


def shipped_bundle_dir() -> Path:
    """The bundle shipped with the package (present in a clone and in an installed wheel)."""
    return Path(__file__).resolve().parent / "default_model"


def default_model_dir() -> Path | None:
    """The user's build (``default_bundle_dir()``) if it exists, else the shipped bundle, else None
    (a directory counts when it holds both ``config.json`` and ``model.safetensors``)."""
    for path in (default_bundle_dir(), shipped_bundle_dir()):
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return path
    return None
