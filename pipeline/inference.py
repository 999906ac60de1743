"""Embeddings and class probabilities of image arrays, batch by batch, on one process or sharded over several."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from pipeline import distributed
from pipeline.device import amp_dtype, autocast
from pipeline.models import l2_normalise
from pipeline.params import Params

BILINEAR = InterpolationMode.BILINEAR


def settings(p: Params, device: torch.device, scale_tta: bool = True) -> dict:
    """`infer`'s keyword arguments from the params, for the embed stage and the per-epoch evaluation:
    `embed.batch_size`, `embed.flip_tta`, `embed.amp` (in `train.amp_dtype`), `train.channels_last` and, with
    `scale_tta`, `embed.scales`. The per-epoch evaluation leaves the scales out: it tracks learning, and a
    scale TTA edit must not retrain a fold (the train stage does not list `embed.scales` in dvc.yaml)."""
    return dict(
        device=device,
        batch_size=p.embed.batch_size,
        flip_tta=p.embed.flip_tta,
        scales=tuple(p.embed.scales) if scale_tta else (),
        dtype=amp_dtype(device, p.embed.amp, p.train.amp_dtype),
        channels_last=p.train.channels_last,
    )


def zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The batch `x` (N, C, H, W) zoomed about its centre by `scale` (torchvision's affine, bilinear, on the
    device): above 1 the centre fills the view (a crop), below 1 the whole image shrinks inside a zero border, as
    the training augmentation's affine zoom leaves it."""
    if scale == 1.0:
        return x
    return TF.affine(x, angle=0.0, translate=[0, 0], scale=scale, shear=[0.0, 0.0], interpolation=BILINEAR, fill=0)


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
    scales: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray | None]:
    """L2-normalised embeddings and, with `probs`, the head's class probabilities (None without).

    Test-time augmentation: the embedding is the sum over the views, then normalised; the views are the image,
    its zooms by each of `scales` (`zoom`) and, with `flip_tta`, the mirror of each; the class probabilities are
    the head's softmax of the mean view. Ask for probabilities only where they are used: they take N x classes
    floats, 13 GB for the 380k training images of the full-size set against its 4,300 classes, where the
    embeddings take 0.4 GB."""
    model.eval()
    cast = autocast(device, dtype)
    embeddings, class_probs = [], []
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc=desc, leave=False, disable=desc is None, mininterval=1.0):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # copy out of the memmap
        x = x.permute(0, 3, 1, 2).float()
        views = [x] + [zoom(x, s) for s in scales]
        if flip_tta:
            views += [torch.flip(v, dims=[3]) for v in views]
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with cast():
            emb = sum(model.net(v).float() for v in views)
            if probs:
                logits = model.head.predict(emb / len(views)).float()
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
