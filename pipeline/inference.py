"""Embeddings and class probabilities of image arrays, batch by batch, on one process or sharded over several."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import distributed
from pipeline.device import amp_dtype, autocast
from pipeline.models import l2_normalise
from pipeline.params import Params


def settings(p: Params, device: torch.device) -> dict:
    """`infer`'s keyword arguments from the params, the same for the embed stage and the per-epoch evaluation:
    `embed.batch_size`, `embed.flip_tta`, `embed.amp` (in `train.amp_dtype`) and `train.channels_last`."""
    return dict(
        device=device,
        batch_size=p.embed.batch_size,
        flip_tta=p.embed.flip_tta,
        dtype=amp_dtype(device, p.embed.amp, p.train.amp_dtype),
        channels_last=p.train.channels_last,
    )


@torch.inference_mode()
def infer(
    model: nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int,
    flip_tta: bool = True,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    desc: str | None = None,
    probs: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """L2-normalised embeddings (flip TTA: sum of both views, then normalise) and, with `probs`, the head's class
    probabilities (None without). Ask for them only where they are used: they take N x classes floats, 13 GB for
    the 380k training images of the full-size set against its 4,300 classes, where the embeddings take 0.4 GB."""
    model.eval()
    cast = autocast(device, dtype)
    embeddings, class_probs = [], []
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
            if probs:
                logits = model.head.predict(emb if not flip_tta else emb / 2).float()
                class_probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        embeddings.append(l2_normalise(emb).cpu().numpy())
    return np.concatenate(embeddings), np.concatenate(class_probs) if probs else None


def infer_sharded(model: nn.Module, images: np.ndarray, batch_size: int, **kw) -> tuple[np.ndarray, np.ndarray | None]:
    """`infer` on this rank's rows, gathered: every rank gets all embeddings and probabilities in row order.

    With world size 1 it is `infer` itself. Progress bars show on rank 0 only.
    """
    world = distributed.world_size()
    if world == 1:
        return infer(model, images, batch_size=batch_size, **kw)
    if not distributed.is_main():
        kw["desc"] = None
    start, stop = distributed.shard_range(len(images), batch_size, distributed.rank(), world)
    emb, probs = infer(model, images[start:stop], batch_size=batch_size, **kw) if stop > start else (None, None)
    gathered = distributed.all_gather_rows(probs) if kw.get("probs", True) else None
    return distributed.all_gather_rows(emb), gathered
