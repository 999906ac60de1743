"""What the benchmarks share: the run context, timing that waits for the device, and the model-only step.

`TrainStep` mirrors the inner loop of `pipeline.engine.train` (its optimiser groups, autocast, the model's own
loss, scaler, clipping, EMA, the per-step `loss.item()`) on one process; keep the two in step until the engine
exposes its step. It measures the model alone on ready tensors, the rate the data loader and the end-to-end loop
are compared against.
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
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn

from pipeline.bench.dataset import BenchData
from pipeline.engine import FaceModel, amp_dtype, autocast, optimizer_groups
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
    model = FaceModel(ctx.params.model, ctx.params.loss, num_classes).to(ctx.device)
    if ctx.params.train.channels_last if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(ctx: Context, model: FaceModel) -> FaceModel:
    """`torch.compile` the embedding network in place when `--compile` is given (the head is one matmul)."""
    if ctx.compile:
        model.net = torch.compile(model.net)
    return model


class TrainStep:
    """One optimisation step of `pipeline.engine.train`, on tensors already on the device."""

    def __init__(self, ctx: Context, model: FaceModel, dtype: torch.dtype | None):
        tp = ctx.params.train
        self.tp, self.device, self.model = tp, ctx.device, model
        self.optimizer = create_optimizer_v2(
            model,
            opt=tp.optimizer,
            lr=tp.lr,
            weight_decay=tp.weight_decay,
            param_group_fn=lambda m: optimizer_groups(m, tp.weight_decay),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        self.ema = ModelEmaV3(model, decay=tp.ema_decay, use_warmup=True) if tp.ema else None
        self.cast = autocast(ctx.device, dtype)
        self.step = 0
        maybe_compile(ctx, model)  # after the EMA copy: the copy stays a plain module

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        tp, model = self.tp, self.model
        model.train()
        x = images.float()
        if tp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.cast():
            loss, _ = model(x, labels, tp.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tp.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.ema is not None:
            self.ema.update(model, step=self.step)
        return loss.item()  # the engine reads the loss every step (a device sync on CUDA): so does the bench


def model_step_rate(ctx: Context, num_classes: int, dtype: torch.dtype | None | str = "params") -> float:
    """Images/s of the training step alone on a ready uint8 batch on the device (cached per run and dtype).

    Args:
        dtype: The autocast dtype; "params" (default) is the one training uses (`Context.dtype`).
    """
    dtype = ctx.dtype if dtype == "params" else dtype
    key = ("model_step_rate", dtype)
    if key in ctx.shared:
        return ctx.shared[key]
    tp, size = ctx.params.train, ctx.params.data.image_size
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (tp.batch_size, 3, size, size), dtype=np.uint8)).to(ctx.device)
    labels = torch.from_numpy(rng.integers(0, num_classes, tp.batch_size)).to(ctx.device)
    step = TrainStep(ctx, make_model(ctx, num_classes), dtype)
    for _ in range(ctx.steps(5, 2) + (10 if ctx.compile else 0)):  # warm-up: allocator, oneDNN/cuDNN, compile
        step(images, labels)
    n = ctx.steps(30, 3)
    sync(ctx.device)
    start = time.perf_counter()
    for _ in range(n):
        step(images, labels)
    sync(ctx.device)
    rate = n * tp.batch_size / (time.perf_counter() - start)
    ctx.shared[key] = rate
    log.info("model-only training step (%s): %.0f images/s", dtype_name(dtype), rate)
    return rate


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def with_overrides(params: Params, overrides: dict) -> Params:
    """A validated copy of `params` with some keys replaced, e.g. {"train": {"epochs": 2}}."""
    from pipeline.params import parse_params

    def merge(base: dict, update: dict) -> dict:
        out = dict(base)
        for key, value in update.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
        return out

    return parse_params(merge(params.model_dump(mode="json"), overrides), "bench overrides", check_model=False)
