"""The training loop: AMP, EMA, one visible step budget, per-epoch checkpoints with exact resume.

`train` runs a few named steps: plan the budget (`plan_budget`), build the model and optimiser (`build`), resume
from a checkpoint written under the same fingerprint (`resume`), then per epoch run it (`run_epoch`), evaluate it
(`pipeline.monitor`) and checkpoint it (`save_checkpoint`).

Resuming is exact on CPU: data order and augmentation draws are functions of (seed, epoch, index), and the
checkpoint holds the RNG state, so a run killed mid-epoch and resumed ends with the same weights as one that
was never interrupted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import distributed
from pipeline.dataset import FaceDataset
from pipeline.device import amp_dtype, autocast, dtype_name, resolve_device
from pipeline.face_model import FaceModel, start_from
from pipeline.io import atomic_path
from pipeline.models import resolve_pool_grid
from pipeline.monitor import EvalSets, evaluate
from pipeline.params import Params, TrainParams
from pipeline.samplers import EpochSampler, MPerClassEpochSampler

log = logging.getLogger(__name__)

EVALUATIONS_PER_PHASE = 12  # train.eval_every: auto evaluates about this often, whatever the epoch count


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which checkpoint holds how many finished epochs, and how to resume."""


def interrupted_message(run: Run, epoch: int, kept: int, prefix: str = "train") -> str:
    """The one line for an interrupt in (0-based) `epoch` when `run.ckpt_path` holds `kept` finished epochs."""
    where = f"interrupted in {'' if prefix == 'train' else f'{prefix} '}epoch {epoch + 1}/{run.budget.epochs}"
    if kept == 0:
        return (
            f"{where}, before its first checkpoint: nothing to resume from; "
            "run dvc repro (or make repro) again to start this phase over"
        )
    return (
        f"{where}: {run.ckpt_path} holds the {kept} finished epoch{'s' if kept > 1 else ''}; "
        "run dvc repro (or make repro) again to resume from it"
    )


def optimizer_groups(model: FaceModel, weight_decay: float) -> list[dict]:
    """timm's groups (no weight decay on biases and norms) for everything but the centre-loss centres, which get
    their own learning rate and no decay."""
    special = model.objective.param_groups(0.0, include_head=False)
    own = {id(p) for g in special for p in g["params"]}
    groups = param_groups_weight_decay(model, weight_decay)
    for g in groups:
        g["params"] = [p for p in g["params"] if id(p) not in own]
    return [g for g in groups if g["params"]] + special


def make_loader(
    dataset: FaceDataset,
    labels: np.ndarray,
    cfg: Params,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """The training DataLoader: a sampler yielding (epoch, index) keys (m-per-class when `loss.m_per_class`),
    this rank's share of each global batch, `train.num_workers` workers."""
    tp = cfg.train
    if cfg.loss.m_per_class:
        sampler = MPerClassEpochSampler(labels, cfg.loss.m_per_class, tp.batch_size, seed, rank, world)
    else:
        sampler = EpochSampler(len(dataset), seed, tp.batch_size, rank, world)
    if sampler.length == 0:
        raise ValueError(f"train.batch_size={tp.batch_size} is larger than the {len(dataset)} training images")
    return DataLoader(
        dataset,
        batch_size=tp.batch_size // world,
        sampler=sampler,
        num_workers=tp.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=tp.num_workers > 0,
        prefetch_factor=4 if tp.num_workers > 0 else None,
    )


class TrainStep:
    """One optimisation step on a batch already on the device: autocast forward, loss check, scaled backward,
    gradient clipping, optimiser step, EMA update. `net` is the model itself or its DDP wrapper."""

    def __init__(self, model: FaceModel, tp: TrainParams, device: torch.device, dtype: torch.dtype | None):
        self.model, self.net, self.tp = model, model, tp
        self.optimizer = create_optimizer_v2(
            model,
            opt=tp.optimizer,
            lr=tp.lr,
            weight_decay=tp.weight_decay,
            param_group_fn=lambda m: optimizer_groups(m, tp.weight_decay),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # fp16 only: bf16 needs none
        self.ema = ModelEmaV3(model, decay=tp.ema_decay, use_warmup=True) if tp.ema else None
        self.cast = autocast(device, dtype)
        self.step = 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
        """Returns the loss (read every step: a device sync on CUDA) and its parts.

        Raises:
            NonFiniteLoss: before any weight changes.
        """
        x = images.float()
        if self.tp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.cast():
            loss, parts = self.net(x, labels, self.tp.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss is {value} at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.tp.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.tp.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return value, parts


@dataclass(frozen=True)
class Budget:
    """How long one training phase runs: what `train.epochs` / `train.steps` decide for this data set."""

    steps_per_epoch: int  # optimiser steps per pass over the images (the ragged last batch is dropped)
    epochs: int
    eval_every: int  # epochs between validation passes (and always after the last)
    rule: str  # which knob decided, in words, for the log

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_budget(tp: TrainParams, steps_per_epoch: int, prefix: str = "train") -> Budget:
    """`tp.epochs` epochs when it is an integer; with `auto`, the fewest whole epochs whose steps reach `tp.steps`.

    `prefix` names the params section in messages (`finetune` for phase 2).
    """
    if tp.epochs == "auto":
        epochs = max(1, math.ceil(tp.steps / steps_per_epoch))
        rule = f"{prefix}.epochs: auto, the fewest whole epochs reaching {prefix}.steps={tp.steps}"
    else:
        epochs = tp.epochs
        rule = f"{prefix}.epochs={epochs} ({prefix}.steps is not used)"
    if tp.warmup_epochs >= epochs:
        raise ValueError(f"{prefix}.warmup_epochs ({tp.warmup_epochs}) must be below the {epochs} epochs of {rule}")
    every = max(1, epochs // EVALUATIONS_PER_PHASE) if tp.eval_every == "auto" else tp.eval_every
    return Budget(steps_per_epoch, epochs, every, rule)


@dataclass
class TrainData:
    """The images one model trains on: rows of `images` with their class indices, and the augmentation."""

    images: np.ndarray  # or a StackedImages view
    rows: np.ndarray
    labels: np.ndarray  # class index of each row
    num_classes: int
    transform: object  # albumentations pipeline (pipeline.augment.load)


@dataclass
class Run:
    """Everything one training phase holds while it runs."""

    model: FaceModel
    trainer: TrainStep
    scheduler: object
    loader: DataLoader
    budget: Budget
    device: torch.device
    ckpt_path: Path
    fingerprint: str
    world: int = 1
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> FaceModel:
        """The model evaluated and saved: the EMA weights when EMA is on."""
        return self.trainer.ema.module if self.trainer.ema is not None else self.model


def build(
    cfg: Params, data: TrainData, out_dir: Path, seed: int, fingerprint: str, init: FaceModel | None, prefix: str
) -> Run:
    """Model (from `init`'s weights where given), loader, optimiser step, scheduler and budget; nothing trained."""
    tp: TrainParams = cfg.train
    device = distributed.local_device(resolve_device(tp.device))
    world = distributed.world_size()
    if tp.batch_size % world:
        raise ValueError(f"train.batch_size={tp.batch_size} (the global batch) does not divide over {world} processes")
    torch.manual_seed(seed)
    model = FaceModel(resolve_pool_grid(cfg.model, cfg.data.image_size), cfg.loss, data.num_classes)
    if init is not None:
        log.info("starting from the phase-1 weights: %s", ", ".join(start_from(model, init)))
    model = model.to(device)
    if tp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = FaceDataset(data.images, data.rows, data.labels, data.transform, seed=seed)
    loader = make_loader(dataset, data.labels, cfg, seed, device, distributed.rank(), world)
    budget = plan_budget(tp, len(loader), prefix)
    log.info(
        "%d epochs x %d steps = %d optimiser steps of %d images (%s); evaluating every %d epoch(s)",
        budget.epochs,
        budget.steps_per_epoch,
        budget.steps,
        tp.batch_size,
        budget.rule,
        budget.eval_every,
    )
    dtype = amp_dtype(device, tp.amp, tp.amp_dtype)
    log.info(
        "precision on %s: %s (train.amp: %s, train.amp_dtype: %s)", device, dtype_name(dtype), tp.amp, tp.amp_dtype
    )
    trainer = TrainStep(model, tp, device, dtype)
    scheduler, _ = create_scheduler_v2(
        trainer.optimizer,
        sched="cosine",
        num_epochs=budget.epochs,
        min_lr=tp.min_lr,
        warmup_lr=tp.lr * 0.01,
        warmup_epochs=tp.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=budget.steps_per_epoch,
    )
    return Run(model, trainer, scheduler, loader, budget, device, out_dir / "checkpoint.pt", fingerprint, world)


def resume(run: Run) -> None:
    """Continue from `run.ckpt_path` when it was written under the same fingerprint (params, data, code)."""
    if not run.ckpt_path.exists():
        return
    ckpt = torch.load(run.ckpt_path, map_location=run.device, weights_only=False)
    if ckpt.get("fingerprint") != run.fingerprint:
        log.info("%s was written with other params or data; training from scratch", run.ckpt_path)
        return
    t = run.trainer
    run.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    t.scaler.load_state_dict(ckpt["scaler"])
    if t.ema is not None:
        t.ema.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    run.start_epoch, run.history = ckpt["epoch"], ckpt["history"]
    log.info("resuming from %s after epoch %d/%d", run.ckpt_path, run.start_epoch, run.budget.epochs)
    if ckpt.get("world_size", 1) != run.world:
        log.info("it was written by %d processes; this run has %d", ckpt.get("world_size", 1), run.world)


def wrap_distributed(run: Run, tp: TrainParams) -> None:
    """With several processes: SyncBatchNorm if asked, global-batch metric losses, and DDP around the model."""
    if run.world == 1:
        return
    model = run.model
    if tp.sync_bn:
        if run.device.type != "cuda":
            raise ValueError("train.sync_bn needs CUDA: torch's SyncBatchNorm has no CPU kernel")
        model = run.model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same Parameters: optimiser, EMA hold
    if model.objective.metric is not None:  # pair mining and triplets must see the global batch
        metric = model.objective.metric
        metric.loss = distributed.wrap_for_global_batch(metric.loss)
        if metric.miner is not None:
            metric.miner = distributed.wrap_for_global_batch(metric.miner)
    run.trainer.net = nn.parallel.DistributedDataParallel(  # averages the gradients over the processes
        model, device_ids=[run.device.index] if run.device.type == "cuda" else None
    )


def run_epoch(run: Run, epoch: int, seed: int) -> dict[str, float]:
    """One pass over the loader; returns the epoch's row: mean loss (and its parts) over the global batches, lr."""
    run.model.train()
    run.loader.sampler.set_epoch(epoch)
    if run.world > 1:
        torch.manual_seed(distributed.rank_seed(seed, epoch))  # per-rank dropout draws, reproducible on resume
    total, seen, part_sums = 0.0, 0, {}
    step = epoch * run.budget.steps_per_epoch
    desc = f"epoch {epoch + 1}/{run.budget.epochs}"
    bar = tqdm(run.loader, desc=desc, leave=False, mininterval=1.0, disable=not distributed.is_main())
    for images, labels in bar:
        images = images.to(run.device, non_blocking=True)
        labels = labels.to(run.device, non_blocking=True)
        try:
            loss, parts = run.trainer(images, labels)
        except NonFiniteLoss as err:
            raise NonFiniteLoss(
                f"{err} (epoch {epoch + 1}); lower train.lr or turn off train.amp. "
                f"The last good checkpoint is kept: {run.ckpt_path} ({len(run.history)} epochs done)"
            ) from None
        step += 1
        run.scheduler.step_update(num_updates=step)
        total += loss * len(labels)
        seen += len(labels)
        for name, value in parts.items():
            part_sums[name] = part_sums.get(name, 0.0) + value * len(labels)
        bar.set_postfix(loss=f"{total / seen:.3f}")
    total, seen = distributed.all_reduce_sum(total, seen)  # the mean over the global batches
    row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lr": run.trainer.optimizer.param_groups[0]["lr"]}
    if len(part_sums) > 1:  # the loss has several parts: log each (unweighted) too
        names = sorted(part_sums)
        sums = distributed.all_reduce_sum(*(part_sums[n] for n in names))
        row.update({f"train_{n}": v / max(seen, 1) for n, v in zip(names, sums, strict=True)})
    return row


def stop_workers(loader: DataLoader) -> None:
    """End the loader's persistent worker processes now, at the end of the phase.

    Left to the garbage collector, they would end in the iterator's `__del__`, where a Ctrl-C is printed as an
    ignored exception (a traceback) and otherwise lost; here it is a `TrainingInterrupted` like any other.
    """
    iterator = getattr(loader, "_iterator", None)  # torch keeps the persistent workers' iterator there
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def save_checkpoint(run: Run, epoch: int, cfg: Params) -> None:
    """Everything `resume` needs, written atomically; the unwrapped model's keys, whatever the world size."""
    t = run.trainer
    with atomic_path(run.ckpt_path) as tmp:
        torch.save(
            {
                "model": run.model.state_dict(),
                "optimizer": t.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": t.scaler.state_dict(),
                "ema": t.ema.state_dict() if t.ema is not None else None,
                "rng": {"torch": torch.get_rng_state()},
                "epoch": epoch + 1,
                "history": run.history,
                "fingerprint": run.fingerprint,
                "params": cfg.model_dump(mode="json"),
                "world_size": run.world,
            },
            tmp,
        )


def train(
    cfg: Params,
    data: TrainData,
    eval_sets: EvalSets,
    out_dir: Path,
    seed: int,
    fingerprint: str,
    log_metrics: Callable[[dict[str, float]], None],
    init: FaceModel | None = None,
    prefix: str = "train",
) -> tuple[FaceModel, Budget]:
    """Train one model, checkpointing after every epoch to ``out_dir/checkpoint.pt`` and resuming from it.

    `log_metrics` is called once per epoch, in order, also for epochs replayed from a resumed checkpoint.
    `init` (phase 2 of the transfer recipe) gives the starting weights: its network, and its head when the head
    is of the same kind and size; `prefix` names phase 2's params section in messages. Returns the EMA model (or
    the raw one when EMA is off), in eval mode, and the budget that ran.
    """
    run = build(cfg, data, out_dir, seed, fingerprint, init, prefix)
    resume(run)
    epoch = kept = run.start_epoch  # the epoch running, and the finished epochs the checkpoint holds
    try:
        wrap_distributed(run, cfg.train)
        if distributed.is_main():
            for row in run.history:
                log_metrics(row)
        run.trainer.step = run.start_epoch * run.budget.steps_per_epoch
        epochs = run.budget.epochs
        for epoch in range(run.start_epoch, epochs):
            row = run_epoch(run, epoch, seed)
            if (epoch + 1) % run.budget.eval_every == 0 or epoch + 1 == epochs:
                distributed.broadcast_buffers(run.final)  # evaluate rank 0's model everywhere
                row.update(evaluate(run.final, eval_sets, run.device, cfg))
            log.info(
                "epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            )
            run.history.append(row)
            if distributed.is_main():
                save_checkpoint(run, epoch, cfg)  # atomic: interrupted, the previous checkpoint stays whole
                kept = epoch + 1
                log_metrics(row)
            distributed.barrier()  # no rank runs ahead of a checkpoint still being written
            kept = epoch + 1
        stop_workers(run.loader)
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_message(run, epoch, kept, prefix)) from None
    run.final.eval()
    return run.final, run.budget
