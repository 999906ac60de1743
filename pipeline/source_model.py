"""The source model of the seed's "develop model" transfer approach: a backbone pretrained on a rendered synthetic
set of many identities (the source task), whose weights the fold models start from (`pipeline/stages/source.py`).

The rendering is `pipeline.sources.synthetic_faces` (the faces of `data.source: synthetic`), drawn straight into
memory at `source.image_size`: no JPEGs, no index. The training is the train stage's
(`pipeline.engine.train`, the same network, loss and optimiser code) under the `source` section's budget, so a
source model is exactly what the train stage would have made of that set, and its backbone loads into the fold
models tensor for tensor.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from pipeline.params import DataParams, LossParams, ModelParams, Params, SourceParams, TrainParams
from pipeline.sources.synthetic_faces import make_identity, render

# Seed domains, so that the source set never repeats the faces `data.source: synthetic` renders for a competition.
_SOURCE_TRAITS, _SOURCE_IMAGES = 101, 102


def _render_identities(
    seed: int, first: int, count: int, per_identity: int, size: int, difficulty: float
) -> np.ndarray:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    out = np.empty((count * per_identity, size, size, 3), dtype=np.uint8)
    for i in range(count):
        ident = make_identity(np.random.default_rng([seed, _SOURCE_TRAITS, first + i]))
        for j in range(per_identity):
            rng = np.random.default_rng([seed, _SOURCE_IMAGES, first + i, j])
            out[i * per_identity + j] = render(ident, rng, size, difficulty)
    return out


def render_source_set(s: SourceParams, size: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`s.identities` x `s.images_per_identity` faces of `size` px (N, size, size, 3 uint8) and their identity
    indices, identity by identity. The same for a given `s.seed` whatever `workers` is."""
    chunk = max(1, min(64, math.ceil(s.identities / max(1, workers * 8))))
    starts = list(range(0, s.identities, chunk))
    args = [(s.seed, a, min(chunk, s.identities - a), s.images_per_identity, size, s.difficulty) for a in starts]
    parts: list[np.ndarray] = []
    with tqdm(total=s.identities * s.images_per_identity, unit="img", desc="render source faces") as bar:
        if workers <= 1:
            for a in args:
                parts.append(_render_identities(*a))
                bar.update(len(parts[-1]))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for part in pool.map(_render_identities, *zip(*args, strict=True)):
                    parts.append(part)
                    bar.update(len(part))
    labels = np.repeat(np.arange(s.identities, dtype=np.int64), s.images_per_identity)
    return np.concatenate(parts), labels


def source_params(p: Params) -> Params:
    """The params the source model trains under: the fold models' network (`model`) at `source.image_size`, the
    library's default loss and training settings, and the `source` section's budget, learning rate and batch.

    Only `source` and `model` are read, so an experiment on `data`, `loss`, `train` or `seed` reuses the committed
    or cached source model instead of retraining it (dvc.yaml lists just these for the stage)."""
    s = p.source
    train = TrainParams(epochs="auto", steps=s.steps, lr=s.lr, batch_size=s.batch_size, verification_eval=False)
    model = ModelParams(**{**p.model.model_dump(), "pretrained": False, "pretrained_path": None})
    return Params(seed=s.seed, data=DataParams(image_size=s.image_size), model=model, loss=LossParams(), train=train)
