"""Benchmark 2, data loading: images/s of the training loader against the model's training step alone.

The pipeline's loader reads the decoded uint8 memmap (the decode stage) and augments with albumentations, with
the params' `train.num_workers`, sampler and batch size, exactly as `pipeline.engine.train` builds it. For
comparison, the same loader over the JPEG files (decode + resize per image, as a loader without the decode
stage would). The loader has to outrun the step by a margin so the model never waits for data.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline import augment, engine, images
from pipeline.bench.common import Context, model_step_rate
from pipeline.bench.report import Row
from pipeline.dataset import FaceDataset, sample_seed
from pipeline.device import dtype_name

log = logging.getLogger(__name__)


class JpegDataset(Dataset):
    """`FaceDataset` over image files instead of the decoded array: decode, resize, augment per sample."""

    def __init__(self, root: Path, paths: list[str], labels: np.ndarray, size: int, transform: A.BaseCompose, seed=0):
        self.root, self.paths, self.size, self.transform, self.seed = root, paths, size, transform, seed
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        img = images.fit(images.read_image(self.root / self.paths[i]), self.size)
        augment.reseed(self.transform, sample_seed(self.seed, epoch, i))
        img = self.transform(image=img)["image"]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), self.labels[i]


def make_loader(ctx: Context, dataset: Dataset, labels: np.ndarray) -> DataLoader:
    """The DataLoader `pipeline.engine.train` builds on one process (its own factory)."""
    return engine.make_loader(dataset, labels, ctx.params, 0, ctx.device)


def loader_rate(loader: DataLoader, batches: int) -> float:
    """Images/s over `batches` batches after the first (which pays for starting the workers)."""
    it = iter(loader)
    next(it)
    seen = 0
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        seen += len(x)
    return seen / (time.perf_counter() - start)


def run(ctx: Context) -> list[Row]:
    tp, data = ctx.params.train, ctx.data
    labels, n_classes = data.labels()
    step_rate = model_step_rate(ctx, n_classes)
    batches = ctx.steps(60, 3)
    if (batches + 1) * tp.batch_size > len(labels):
        raise ValueError(f"the bench set has {len(labels)} training images, too few for {batches + 1} batches")
    transform = augment.build(ctx.params.augment)
    memmap = FaceDataset(data.array("train"), None, labels, transform, seed=0)
    ours = loader_rate(make_loader(ctx, memmap, labels), batches)
    paths = data.manifest("train")["path"].tolist()
    jpeg = loader_rate(
        make_loader(ctx, JpegDataset(data.raw, paths, labels, ctx.params.data.image_size, transform), labels), batches
    )
    workers = f"{tp.num_workers} worker{'s' if tp.num_workers != 1 else ''}"
    step = f"model step ({ctx.device.type}, {dtype_name(ctx.dtype)})"
    log.info("loader: memmap %.0f images/s, JPEG %.0f images/s, step %.0f images/s", ours, jpeg, step_rate)
    return [
        Row(
            "loading",
            f"loader, decoded memmap + augment ({workers})",
            ours,
            "img/s",
            step_rate,
            step,
            ours / step_rate,
            ">= 3x step",
            ours >= 3 * step_rate,
            f"{batches} batches of {tp.batch_size} after the first; the step is measured alone on a ready batch",
        ),
        Row(
            "loading",
            f"loader, JPEG decode + augment ({workers})",
            jpeg,
            "img/s",
            step_rate,
            step,
            jpeg / step_rate,
            "report (memmap / JPEG: " + f"{ours / jpeg:.2g}x)",
            None,
            "the loader the pipeline would have without its decode stage (data/decoded/*.npy)",
        ),
    ]
