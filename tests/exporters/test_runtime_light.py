"""The runtime a server imports stays light: no torch, no model library (only its torch-free
input conventions, ``amplify.inputs``), for ONNX exports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_runtime_imports_neither_torch_nor_the_library(exports):
    out, _ = exports.get("random_small", "triton")
    code = (
        "import sys; from exporters.runtime import load_exported; import numpy as np\n"
        f"m = load_exported({str(out)!r}, threads=1)\n"
        "a = m.act(np.zeros((1, 2, 128, 128, 3), np.uint8), np.zeros((1, 9), np.float32), text=[m.instructions[0]])\n"
        "assert a.shape == (1, 16, 7), a.shape\n"
        "light = {'amplify', 'amplify.inputs'}  # the library's package and its torch-free input conventions only\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'amplify', 'einops', 'vector_quantize_pytorch')"
        " and k not in light)\n"
        "print(heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
