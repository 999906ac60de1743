"""Where and in what precision the model runs: the device `train.device` names, the autocast dtype and context."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def amp_dtype(device: torch.device, enabled: bool, choice: str) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. fp16 on CPU is refused: it has no scaler there."""
    if not enabled:
        return None
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if choice == "float16" and device.type != "cuda":
        raise ValueError("train.amp_dtype: float16 needs CUDA; use bfloat16 (or auto) on CPU")
    return getattr(torch, choice)


def autocast(device: torch.device, dtype: torch.dtype | None) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
