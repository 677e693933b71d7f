"""What makes a training step fast on the device at hand: the optimizer, the precision, the
host-to-device copy and the optional compiled model.

    opt = adamw(groups, lr=1e-3)                   # fused AdamW on every device that has it
    with autocast(device, bf16=True): ...          # bf16 where the hardware computes it natively
    batch = to_device(collate(...), device)        # pinned, asynchronous copies on CUDA

Each choice was measured against ``transformers.Trainer`` with ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

__all__ = ["adamw", "autocast", "bf16_active", "cpu_has_bf16", "flags_have_bf16", "to_device"]

# CPU flags of native bf16 arithmetic (x86: AVX512-BF16 dot products, AMX tiles); without
# them oneDNN emulates bf16 and autocast is slower than fp32
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (Linux: read from ``/proc/cpuinfo``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return flags_have_bf16(text)


def flags_have_bf16(cpuinfo: str) -> bool:
    """Whether the first ``flags`` line of a ``/proc/cpuinfo`` text names native bf16."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def bf16_active(device: torch.device, bf16: bool, *, cpu: bool = False) -> bool:
    """Whether :func:`autocast` runs ``device`` in bf16 when ``bf16`` is asked for: CUDA GPUs
    that support it; CPUs only with ``cpu`` and native bf16 (:func:`cpu_has_bf16`). CPU bf16 is
    opt-in: on the embedded model (128 wide) it was no faster than fp32, the casts cost what
    the narrower matmuls save, while on an XLM-R-base-shaped body (768 wide) Trainer's bf16
    trained 1.6-1.85x faster than fp32 on an AVX512-BF16 CPU; turning it on by default waits for
    the accuracy check against fp32 (``benchmarks/throughput.py --bf16-accuracy``)."""
    if not bf16:
        return False
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu and device.type == "cpu" and cpu_has_bf16()


def autocast(device: torch.device, bf16: bool, *, cpu: bool = False) -> Any:
    """bf16 autocast where :func:`bf16_active`, else a no-op context (fp32)."""
    if bf16_active(device, bf16, cpu=cpu):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def adamw(groups: Iterable[Mapping[str, Any]], *, lr: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters) wherever torch has the fused kernel: CUDA
    and, since torch 2.4, CPU too. The for-each version cost the optimizer step twice the time
    on CPU (363 ms against 183 ms per step on an 86M-parameter model)."""
    params: list[dict[str, Any]] = [dict(g) for g in groups]
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except RuntimeError:  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a CPU batch to ``device``. On CUDA from pinned memory without blocking, so the
    copy overlaps the previous step's kernels (the loop never waits on the GPU); on CPU as is."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
