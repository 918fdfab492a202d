"""Device and precision checks before loading anything: a clear error for a device torch cannot use,
and whether a device runs bfloat16 natively."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("amplify")


def check_device(device: str | torch.device) -> str:
    """``device`` as a string when torch can use it, else ValueError saying why (e.g. ``cuda`` on a
    CPU-only torch, or ``cuda:3`` with two GPUs)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:N): {e}") from None
    if d.type == "cpu":
        return str(d)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
            raise ValueError(f"device {device!r} needs a CUDA GPU; this torch ({torch.__version__}) is {build}: "
                             f"serve with --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return str(d)
    raise ValueError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: AVX512-BF16 or AMX via oneDNN; CUDA: compute
    capability 8.0 or later). Elsewhere bfloat16 still runs, emulated and slower than float32."""
    d = torch.device(device)
    if d.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def warn_if_emulated(precision: str, device: str | torch.device) -> None:
    """Log a warning when bfloat16 was asked for on a device that would emulate it."""
    if precision.startswith("bf16") and not native_bf16(device):
        log.warning("precision %s on %s: this device has no native bfloat16 (AVX512-BF16/AMX or compute capability "
                    ">= 8.0); it runs, but slower than fp32", precision, device)
