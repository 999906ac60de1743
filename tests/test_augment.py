import numpy as np

from pipeline import augment
from pipeline.params import AugmentParams


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def test_reseed_repeats_a_draw_and_seeds_differ() -> None:
    transform, img = augment.build(AugmentParams()), image()
    draws = []
    for seed in (5, 6, 5):
        augment.reseed(transform, seed)
        draws.append(transform(image=img)["image"])
    assert np.array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0], draws[1])
    assert draws[0].shape == img.shape and draws[0].dtype == np.uint8


def test_transforms_are_applied_independently() -> None:
    """Each transform's "apply?" draw is its own: with per-transform generators seeded alike (albumentations'
    `set_random_seed`), every flipped image was also rotated and colour-jittered."""
    p = AugmentParams()
    transform, img = augment.build(p), image()
    n = 1500
    applied = np.zeros((n, len(transform.transforms)), dtype=bool)
    for seed in range(n):
        augment.reseed(transform, seed)
        transform(image=img)
        applied[seed] = [bool(t.params) for t in transform.transforms]
    flip, affine, colour = applied[:, 0], applied[:, 1], applied[:, 2]
    assert abs(flip.mean() - p.hflip) < 0.05 and abs(affine.mean() - p.affine_p) < 0.05
    # Independent: P(affine | flip) is P(affine), not 1.
    assert abs(affine[flip].mean() - p.affine_p) < 0.06
    assert abs(colour[flip].mean() - p.color_p) < 0.06


def test_saved_transform_draws_the_same(tmp_path) -> None:
    transform, img = augment.build(AugmentParams()), image()
    augment.save(transform, tmp_path / "t.json")
    loaded = augment.load(tmp_path / "t.json")
    for seed in range(20):
        augment.reseed(transform, seed)
        augment.reseed(loaded, seed)
        assert np.array_equal(transform(image=img)["image"], loaded(image=img)["image"])
