"""`pipeline.inference.infer`: class probabilities only where asked for. The full-size run's embed stage held
them for the 380k training images against 4,300 classes (13 GB resident); the same cause, at a size CI affords."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from pipeline.face_model import FaceModel
from pipeline.inference import infer, settings, zoom
from pipeline.models import resolve_pool_grid
from pipeline.params import LossParams, ModelParams, parse_params

CLASSES, IMAGES, SIDE = 3000, 384, 16


def _tiny_model(classes: int = 10) -> FaceModel:
    torch.manual_seed(0)
    p = resolve_pool_grid(ModelParams(width=0.25, embedding_dim=32), SIDE)
    return FaceModel(p, LossParams(), classes).eval()


def _peak_numpy_bytes(fn) -> tuple[int, object]:
    """Peak of the numpy allocations (numpy reports them to tracemalloc; torch's own buffers it does not)."""
    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_embeddings_alone_keep_no_probabilities_and_no_memory_that_grows_with_classes():
    model = _tiny_model(CLASSES)
    images = np.random.default_rng(0).integers(0, 256, (IMAGES, SIDE, SIDE, 3), dtype=np.uint8)
    kw = dict(device=torch.device("cpu"), batch_size=64, dtype=None)

    with_probs, (emb, probs) = _peak_numpy_bytes(lambda: infer(model, images, **kw))
    alone, (emb_alone, none) = _peak_numpy_bytes(lambda: infer(model, images, probs=False, **kw))

    probs_bytes = IMAGES * CLASSES * 4
    assert probs.shape == (IMAGES, CLASSES) and none is None
    np.testing.assert_array_equal(emb, emb_alone)  # the embeddings do not depend on the flag
    assert with_probs >= probs_bytes  # what the full-size embed stage held for its training images
    assert alone < probs_bytes / 4, (alone, probs_bytes)  # only embeddings and one batch: no N x classes array


def test_zoom_keeps_the_image_at_one_magnifies_the_centre_and_borders_with_zeros():
    x = torch.rand(2, 3, SIDE, SIDE)
    torch.testing.assert_close(zoom(x, 1.0), x)
    flat = torch.full((1, 3, SIDE, SIDE), 100.0)
    torch.testing.assert_close(zoom(flat, 1.25), flat)  # a crop of a flat image is flat
    out = zoom(flat, 0.5)
    assert out[0, :, SIDE // 2, SIDE // 2].tolist() == [100.0] * 3  # the shrunk image sits in the middle
    assert out[0, :, 0, 0].tolist() == [0.0] * 3  # inside a zero border, as augment's Affine leaves it
    # above 1 the centre grows: the central quarter of a 2x2 checker fills the view
    quad = torch.zeros(1, 1, SIDE, SIDE)
    quad[..., : SIDE // 2, : SIDE // 2] = 1.0
    grown = zoom(quad, 2.0)
    assert grown[0, 0, 1, 1] == 1.0 and grown[0, 0, -2, -2] == 0.0
    assert grown[0, 0, : SIDE // 2 - 1, : SIDE // 2 - 1].eq(1.0).all()


def test_scale_tta_sums_every_view_and_its_mirror_and_none_is_the_flip_tta_of_before():
    model = _tiny_model()
    images = np.random.default_rng(1).integers(0, 256, (6, SIDE, SIDE, 3), dtype=np.uint8)
    kw = dict(device=torch.device("cpu"), batch_size=4, dtype=None, channels_last=False)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        plain = model.net(x) + model.net(torch.flip(x, dims=[3]))
        views = [x, zoom(x, 0.9), zoom(x, 1.1)]
        views += [torch.flip(v, dims=[3]) for v in views]
        summed = sum(model.net(v) for v in views)
        probs = torch.softmax(model.head.predict(summed / 6), dim=1)

    emb, _ = infer(model, images, **kw)
    np.testing.assert_allclose(emb, torch.nn.functional.normalize(plain).numpy(), atol=1e-6)
    emb3, probs3 = infer(model, images, scales=(0.9, 1.1), **kw)
    np.testing.assert_allclose(emb3, torch.nn.functional.normalize(summed).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs3, probs.numpy(), atol=1e-6)
    assert np.abs(emb3 - emb).max() > 1e-3  # the zoomed views do change the embedding


def test_settings_pass_embed_scales_to_the_embed_stage_but_not_to_the_per_epoch_evaluation():
    params = parse_params({"embed": {"scales": [0.9, 1.1]}}, "params.yaml", check_model=False)
    assert settings(params, torch.device("cpu"))["scales"] == (0.9, 1.1)
    assert settings(params, torch.device("cpu"), scale_tta=False)["scales"] == ()
    assert settings(parse_params({}, "params.yaml", check_model=False), torch.device("cpu"))["scales"] == ()
