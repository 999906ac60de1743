"""`pipeline.inference.infer`: class probabilities only where asked for. The full-size run's embed stage held
them for the 380k training images against 4,300 classes (13 GB resident); the same cause, at a size CI affords."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from pipeline.face_model import FaceModel
from pipeline.inference import infer
from pipeline.models import resolve_pool_grid
from pipeline.params import LossParams, ModelParams

CLASSES, IMAGES, SIDE = 3000, 384, 16


def _peak_numpy_bytes(fn) -> tuple[int, object]:
    """Peak of the numpy allocations (numpy reports them to tracemalloc; torch's own buffers it does not)."""
    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_embeddings_alone_keep_no_probabilities_and_no_memory_that_grows_with_classes():
    torch.manual_seed(0)
    p = resolve_pool_grid(ModelParams(width=0.25, embedding_dim=32), SIDE)
    model = FaceModel(p, LossParams(center_weight=0.0), CLASSES).eval()
    images = np.random.default_rng(0).integers(0, 256, (IMAGES, SIDE, SIDE, 3), dtype=np.uint8)
    kw = dict(device=torch.device("cpu"), batch_size=64, dtype=None)

    with_probs, (emb, probs) = _peak_numpy_bytes(lambda: infer(model, images, **kw))
    alone, (emb_alone, none) = _peak_numpy_bytes(lambda: infer(model, images, probs=False, **kw))

    probs_bytes = IMAGES * CLASSES * 4
    assert probs.shape == (IMAGES, CLASSES) and none is None
    np.testing.assert_array_equal(emb, emb_alone)  # the embeddings do not depend on the flag
    assert with_probs >= probs_bytes  # what the full-size embed stage held for its training images
    assert alone < probs_bytes / 4, (alone, probs_bytes)  # only embeddings and one batch: no N x classes array
