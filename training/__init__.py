"""Training for AMPLIFY: data readers (``training.data``), the three trainers (``amplify train mt|fd|id``),
bundling (``amplify bundle``), the default bundle (``amplify build-default``) and closed-loop
evaluation in the built-in world (``amplify eval-world``). See docs/training.md."""
from amplify.threads import configure_openmp as _configure_openmp

_configure_openmp()  # `python -m training.*` too: short OpenMP spin-waits before torch loads (amplify/threads.py)
