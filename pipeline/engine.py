"""Training and inference loops: AMP, EMA, per-epoch checkpoints with exact resume, dvclive logging.

Resuming is exact on CPU: data order and augmentation draws are functions of (seed, epoch, index), and the
checkpoint holds the RNG state, so a run killed mid-epoch and resumed ends with the same weights as one that
was never interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from pipeline import distributed, metrics
from pipeline.dataset import FaceDataset
from pipeline.io import atomic_path
from pipeline.losses import MPerClassEpochSampler, build_objective
from pipeline.models import FaceNet, l2_normalise
from pipeline.params import LossParams, ModelParams, Params, TrainParams
from pipeline.scoring import verification_scores

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


class FaceModel(nn.Module):
    """Embedding network + training objective (head, centres, metric loss), trained and EMA-averaged together.

    One module whose forward returns the loss, so that DDP averages the gradients of the head and the centres too.
    """

    def __init__(self, model_params: ModelParams, loss_params: LossParams, num_classes: int):
        super().__init__()
        self.net = FaceNet(model_params)
        self.objective = build_objective(loss_params, model_params.embedding_dim, num_classes)

    @property
    def head(self) -> nn.Module:
        return self.objective.head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.net(images), labels, label_smoothing)


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


class EpochSampler(Sampler):
    """Shuffles by (seed, epoch) and yields (epoch, index) keys, so workers know the epoch for augmentation.

    With `world` processes, rank `rank` yields its share of every global batch of `batch_size`
    (`distributed.rank_share`), so the global batches are those of a single process.
    """

    def __init__(self, n: int, seed: int, batch_size: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch = n, seed, 0
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.length = (n // batch_size) * batch_size  # drop the ragged last batch: BatchNorm needs > 1 sample

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)[: self.length]
        order = distributed.rank_share(order, self.batch_size, self.rank, self.world)
        return iter((self.epoch, int(i)) for i in order)

    def __len__(self) -> int:
        return self.length // self.world


@dataclass
class EvalSets:
    """Arrays evaluated after each epoch; any may be None."""

    val_images: np.ndarray | None = None  # validation_classification
    val_labels: np.ndarray | None = None
    fold_images: np.ndarray | None = None  # held-out fold of the training images
    fold_labels: np.ndarray | None = None
    ver_images: np.ndarray | None = None  # validation verification images
    ver_names: list[str] = field(default_factory=list)
    trials: object = None  # DataFrame with a, b, label


@torch.inference_mode()
def infer(
    model: FaceModel,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    flip_tta: bool = True,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised embeddings (flip TTA: sum of both views, then normalise) and class probabilities."""
    model.eval()
    cast = autocast(device, dtype)
    embeddings, probs = [], []
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc=desc, leave=False, disable=desc is None, mininterval=1.0):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # copy out of the memmap
        x = x.permute(0, 3, 1, 2).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with cast():
            emb = model.net(x).float()
            if flip_tta:
                emb = emb + model.net(torch.flip(x, dims=[3])).float()
            logits = model.head.predict(emb if not flip_tta else emb / 2).float()
        embeddings.append(l2_normalise(emb).cpu().numpy())
        probs.append(torch.softmax(logits, dim=1).cpu().numpy())
    return np.concatenate(embeddings), np.concatenate(probs)


def evaluate(model: FaceModel, sets: EvalSets, device: torch.device, cfg: Params) -> dict[str, float]:
    dtype = amp_dtype(device, cfg.embed.amp, cfg.train.amp_dtype)
    out: dict[str, float] = {}
    kw = dict(
        device=device,
        batch_size=cfg.embed.batch_size,
        flip_tta=cfg.embed.flip_tta,
        dtype=dtype,
        channels_last=cfg.train.channels_last,
    )
    if sets.val_images is not None and len(sets.val_images):
        _, p = distributed.infer_sharded(model, sets.val_images, **kw)
        out["val_accuracy"] = metrics.accuracy(sets.val_labels, p.argmax(1))
    if sets.fold_images is not None and len(sets.fold_images):
        _, p = distributed.infer_sharded(model, sets.fold_images, **kw)
        out["fold_accuracy"] = metrics.accuracy(sets.fold_labels, p.argmax(1))
    if cfg.train.verification_eval and sets.ver_images is not None and sets.trials is not None:
        emb, _ = distributed.infer_sharded(model, sets.ver_images, **kw)
        scores = verification_scores(emb, sets.ver_names, sets.trials, **cfg.score.scoring_args())
        out["val_auc"] = metrics.roc_auc(sets.trials["label"].to_numpy(), scores)
    return out


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])


def train(
    cfg: Params,
    train_images: np.ndarray,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    num_classes: int,
    transform,
    eval_sets: EvalSets,
    out_dir: Path,
    seed: int,
    fingerprint: str,
    log_metrics: Callable[[dict[str, float]], None],
    init: FaceModel | None = None,
) -> FaceModel:
    """Train one model, checkpointing after every epoch to ``out_dir/checkpoint.pt`` and resuming from it.

    `log_metrics` is called once per epoch, in order, also for epochs replayed from a resumed checkpoint.
    `init` (phase 2 of the transfer recipe) gives the starting weights: its network, and its head when the head
    is of the same kind and size. Returns the EMA model (or the raw one when EMA is off), in eval mode.
    """
    tp: TrainParams = cfg.train
    device = distributed.local_device(resolve_device(tp.device))
    world = distributed.world_size()
    if tp.batch_size % world:
        raise ValueError(f"train.batch_size={tp.batch_size} (the global batch) does not divide over {world} processes")
    dtype = amp_dtype(device, tp.amp, tp.amp_dtype)
    torch.manual_seed(seed)
    model = FaceModel(cfg.model, cfg.loss, num_classes)
    if init is not None:
        carried = start_from(model, init)
        log.info("starting from the phase-1 weights: %s", ", ".join(carried))
    model = model.to(device)
    if tp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = FaceDataset(train_images, train_rows, train_labels, transform, seed=seed)
    loader = make_loader(dataset, train_labels, cfg, seed, device, distributed.rank(), world)
    sampler = loader.sampler
    steps_per_epoch = len(loader)
    epochs = max(tp.epochs, math.ceil(tp.min_steps / steps_per_epoch))
    eval_every = tp.eval_every
    if epochs > tp.epochs:
        eval_every = max(eval_every, epochs // tp.epochs)  # as many evaluations as the planned epochs would have had
        log.info(
            "%d steps per epoch: training %d epochs to reach train.min_steps=%d, evaluating every %d",
            steps_per_epoch,
            epochs,
            tp.min_steps,
            eval_every,
        )
    trainer = TrainStep(model, tp, device, dtype)
    optimizer, scaler, ema = trainer.optimizer, trainer.scaler, trainer.ema
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=epochs,
        min_lr=tp.min_lr,
        warmup_lr=tp.lr * 0.01,
        warmup_epochs=tp.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )

    ckpt_path = out_dir / "checkpoint.pt"
    start_epoch, history = 0, []
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
            _set_rng_state(ckpt["rng"])
            start_epoch, history = ckpt["epoch"], ckpt["history"]
            log.info("resuming from %s after epoch %d/%d", ckpt_path, start_epoch, epochs)
            if ckpt.get("world_size", 1) != world:
                log.info("it was written by %d processes; this run has %d", ckpt.get("world_size", 1), world)
        else:
            log.info("%s was written with other params or data; training from scratch", ckpt_path)
    if world > 1:
        if tp.sync_bn:
            if device.type != "cuda":
                raise ValueError("train.sync_bn needs CUDA: torch's SyncBatchNorm has no CPU kernel")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same Parameter objects: optimizer and EMA hold
        if model.objective.metric is not None:  # pair mining and triplets must see the global batch
            metric = model.objective.metric
            metric.loss = distributed.wrap_for_global_batch(metric.loss)
            if metric.miner is not None:
                metric.miner = distributed.wrap_for_global_batch(metric.miner)
        trainer.net = nn.parallel.DistributedDataParallel(  # averages the gradients over the processes
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if distributed.is_main():
        for row in history:
            log_metrics(row)

    step = trainer.step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        model.train()
        sampler.set_epoch(epoch)
        if world > 1:
            torch.manual_seed(distributed.rank_seed(seed, epoch))  # per-rank dropout draws, reproducible on resume
        total, seen, part_sums = 0.0, 0, {}
        desc = f"epoch {epoch + 1}/{epochs}"
        bar = tqdm(loader, desc=desc, leave=False, mininterval=1.0, disable=not distributed.is_main())
        for images, labels in bar:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            try:
                loss, parts = trainer(images, labels)
            except NonFiniteLoss as err:
                raise NonFiniteLoss(
                    f"{err} (epoch {epoch + 1}); lower train.lr or turn off train.amp. "
                    f"The last good checkpoint is kept: {ckpt_path} ({len(history)} epochs done)"
                ) from None
            step += 1
            scheduler.step_update(num_updates=step)
            total += loss * len(labels)
            seen += len(labels)
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value * len(labels)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        total, seen = distributed.all_reduce_sum(total, seen)  # the mean over the global batches
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
        if len(part_sums) > 1:  # the loss has several parts: log each (unweighted) too
            names = sorted(part_sums)
            sums = distributed.all_reduce_sum(*(part_sums[n] for n in names))
            row.update({f"train_{n}": v / max(seen, 1) for n, v in zip(names, sums, strict=True)})
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            distributed.broadcast_buffers(ema if ema is not None else model)  # evaluate rank 0's model everywhere
            row.update(evaluate(ema.module if ema is not None else model, eval_sets, device, cfg))
        log.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        history.append(row)
        if distributed.is_main():  # the unwrapped model's keys: one format for any number of processes
            with atomic_path(ckpt_path) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "ema": ema.state_dict() if ema is not None else None,
                        "rng": _rng_state(),
                        "epoch": epoch + 1,
                        "history": history,
                        "fingerprint": fingerprint,
                        "params": cfg.model_dump(mode="json"),
                        "world_size": world,
                    },
                    tmp,
                )
            log_metrics(row)
        distributed.barrier()  # no rank runs ahead of a checkpoint still being written
    final = ema.module if ema is not None else model
    final.eval()
    return final


def start_from(model: FaceModel, init: FaceModel) -> list[str]:
    """Copy `init`'s weights into `model`: the whole network, and each part of the objective (head, centres) whose
    kind and tensor shapes match. The cosine heads (NormFace and the margin heads) share one layout of class
    vectors, so e.g. ArcFace fine-tuning starts from a NormFace head's classes. Returns the parts carried over."""
    model.net.load_state_dict(init.net.state_dict())
    carried = ["network"]
    for name in ("head", "center"):
        mine, theirs = getattr(model.objective, name), getattr(init.objective, name)
        if mine is None or theirs is None or type(mine) is not type(theirs):
            continue
        a, b = mine.state_dict(), theirs.state_dict()
        if a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a):
            mine.load_state_dict(b)
            carried.append(name)
    return carried


def save_model(model: FaceModel, cfg: Params, classes: list[str], path: Path) -> None:
    """The inference artifact: weights (EMA), the model params to rebuild it and the class names."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "model_params": cfg.model.model_dump(mode="json"),
                "loss_params": cfg.loss.model_dump(mode="json"),
                "classes": classes,
            },
            tmp,
        )


def load_model(path: Path, device: torch.device) -> tuple[FaceModel, list[str]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = FaceModel(ModelParams(**ckpt["model_params"]), LossParams(**ckpt["loss_params"]), len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt["classes"]
