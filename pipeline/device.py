"""Where and in what precision the model runs: the device `train.device` names, the autocast dtype and context."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@functools.cache
def cpu_runs_bf16() -> bool:
    """Whether this CPU has bf16 kernels (oneDNN's own test: AVX-512 or AMX). Without them torch emulates bf16 and
    autocast is far slower than fp32: on an AVX2-only AMD EPYC a training step of the default network took 15x as
    long at 64 px (1.16 s fp32 against 17.9 s bf16, batch 128), where bf16 embedding extraction ran 2.0x fp32 on an
    earlier machine with AVX-512 BF16 (docs/BENCH.md, row 12)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # the op moved: fall back on the vector width torch dispatches to
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def amp_dtype(device: torch.device, enabled: bool, choice: str) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. `auto`: fp16 on CUDA (with the GradScaler), full precision on
    a CPU, whatever its instruction set, so that one params.yaml trains the same numbers on any CPU (bf16 is native
    on some CPUs and emulated, many times slower, on the rest: `cpu_runs_bf16`); bf16 on CPU only when asked for by
    name. fp16 on CPU is refused: it has no scaler there."""
    if not enabled:
        return None
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else None
    if choice == "float16" and device.type != "cuda":
        raise ValueError("train.amp_dtype: float16 needs CUDA; use bfloat16 (or auto) on CPU")
    if choice == "bfloat16" and device.type == "cpu" and not cpu_runs_bf16():
        log.warning(
            "train.amp_dtype: bfloat16 on a CPU without bf16 kernels (%s): torch emulates it, many times slower "
            "than full precision (amp_dtype: auto)",
            torch.backends.cpu.get_cpu_capability(),
        )
    return getattr(torch, choice)


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def autocast(device: torch.device, dtype: torch.dtype | None) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
