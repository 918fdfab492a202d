"""Benchmarks of the project (``python -m benchmarks.<name>``); see docs/performance.md."""
from amplify.threads import configure_openmp as _configure_openmp

_configure_openmp()  # short OpenMP spin-waits before torch loads (amplify/threads.py)
