"""What the benchmarks share: the run context, timing that waits for the device, and the model-only step.

`train_step` is `pipeline.engine.TrainStep`, the step `engine.train` runs, on one process: it measures the model
alone on ready tensors, the rate the data loader and the end-to-end loop are compared against.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from pipeline.bench.dataset import BenchData
from pipeline.device import amp_dtype, dtype_name
from pipeline.engine import TrainStep
from pipeline.face_model import FaceModel
from pipeline.models import resolve_pool_grid
from pipeline.params import Params

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Context:
    """One bench run: params (with the bench's overrides), device, the cached set and shared measurements."""

    params: Params
    device: torch.device
    data: BenchData
    small: bool
    compile: bool
    scratch: Path  # temporary folder for outputs (checkpoints, verification.csv, manifests)
    repeats: int  # best-of repeats for measurements of a few seconds
    shared: dict = field(default_factory=dict)  # measurements several benchmarks use (model step rate, model)

    @property
    def dtype(self) -> torch.dtype | None:
        """The training autocast dtype the params choose on this device (bf16 on CPU, fp16 on CUDA)."""
        return amp_dtype(self.device, self.params.train.amp, self.params.train.amp_dtype)

    def steps(self, full: int, small: int) -> int:
        return small if self.small else full


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read after it measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn: Callable[[], T], repeats: int, device: torch.device | None = None) -> tuple[float, T]:
    """The fastest of `repeats` runs of `fn` (seconds) and the last result: the least disturbed by other load."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device is not None:
            sync(device)
        start = time.perf_counter()
        result = fn()
        if device is not None:
            sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


@contextlib.contextmanager
def count_images(module: nn.Module) -> Iterator[list[int]]:
    """Count images entering `module.forward` (summed batch sizes), in a one-element list, while inside."""
    counter = [0]

    def hook(_module: nn.Module, args: tuple) -> None:
        counter[0] += int(args[0].shape[0])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def make_model(ctx: Context, num_classes: int, channels_last: bool | None = None) -> FaceModel:
    """The params' model on the bench device, in the params' memory format (or `channels_last` when given)."""
    torch.manual_seed(0)
    model_params = resolve_pool_grid(ctx.params.model, ctx.params.data.image_size)
    model = FaceModel(model_params, ctx.params.loss, num_classes).to(ctx.device)
    if ctx.params.train.channels_last if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(ctx: Context, model: FaceModel) -> FaceModel:
    """`torch.compile` the embedding network in place when `--compile` is given (the head is one matmul)."""
    if ctx.compile:
        model.net = torch.compile(model.net)
    return model


def train_step(ctx: Context, model: FaceModel, dtype: torch.dtype | None) -> TrainStep:
    """The engine's own training step (optimiser groups, autocast, loss, scaler, clipping, EMA), `--compile` applied
    after the EMA copy so the copy stays a plain module."""
    step = TrainStep(model, ctx.params.train, ctx.device, dtype)
    maybe_compile(ctx, model)
    return step


def model_step_rate(
    ctx: Context, num_classes: int, dtype: torch.dtype | None | str = "params", again: bool = False
) -> float:
    """Images/s of the training step alone on a ready uint8 batch on the device: the best of `ctx.repeats` timed
    windows, kept per run and dtype.

    Args:
        dtype: The autocast dtype; "params" (default) is the one training uses (`Context.dtype`).
        again: Measure once more and keep the best of this and the earlier measurements, so that a rate compared
            with other best-of-N figures measured later in the run is taken in the same spells of load.
    """
    dtype = ctx.dtype if dtype == "params" else dtype
    key = ("model_step_rate", dtype)
    if key in ctx.shared and not again:
        return ctx.shared[key]
    tp, size = ctx.params.train, ctx.params.data.image_size
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (tp.batch_size, 3, size, size), dtype=np.uint8)).to(ctx.device)
    labels = torch.from_numpy(rng.integers(0, num_classes, tp.batch_size)).to(ctx.device)
    step = train_step(ctx, make_model(ctx, num_classes), dtype)
    for _ in range(ctx.steps(5, 2) + (10 if ctx.compile else 0)):  # warm-up: allocator, oneDNN/cuDNN, compile
        step(images, labels)
    n = ctx.steps(30, 3)
    rates = []
    for _ in range(ctx.repeats):
        sync(ctx.device)
        start = time.perf_counter()
        for _ in range(n):
            step(images, labels)
        sync(ctx.device)
        rates.append(n * tp.batch_size / (time.perf_counter() - start))
    rate = max(rates + [ctx.shared.get(key, 0.0)])
    ctx.shared[key] = rate
    log.info("model-only training step (%s): %.0f images/s (best so far %.0f)", dtype_name(dtype), max(rates), rate)
    return rate


def with_overrides(params: Params, overrides: dict) -> Params:
    """A validated copy of `params` with some keys replaced, e.g. {"train": {"epochs": 2}}."""
    from pipeline.params import parse_params

    def merge(base: dict, update: dict) -> dict:
        out = dict(base)
        for key, value in update.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
        return out

    return parse_params(merge(params.model_dump(mode="json"), overrides), "bench overrides", check_model=False)
