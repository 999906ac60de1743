"""The training augmentation, built from named scalar knobs (readable in `dvc params diff`).

The augment stage serialises it with ``A.save`` so training loads exactly what was previewed.
"""

from __future__ import annotations

import random
from pathlib import Path

import albumentations as A
import numpy as np

from pipeline.io import atomic_path
from pipeline.params import AugmentParams


def build(p: AugmentParams) -> A.Compose:
    """Geometry first, then photometric changes, then occlusion; works on uint8 HWC RGB at any size."""
    return A.Compose(
        [
            A.HorizontalFlip(p=p.hflip),
            A.Affine(
                translate_percent=(-p.shift, p.shift),
                scale=(1.0 - p.scale, 1.0 + p.scale),
                rotate=(-p.rotate, p.rotate),
                border_mode=0,  # cv2.BORDER_CONSTANT: no mirrored half-faces at the border
                p=p.affine_p,
            ),
            A.RandomBrightnessContrast(brightness_limit=p.brightness, contrast_limit=p.contrast, p=p.color_p),
            A.HueSaturationValue(
                hue_shift_limit=p.hue_shift, sat_shift_limit=p.saturation, val_shift_limit=0, p=p.hsv_p
            ),
            A.ToGray(num_output_channels=3, p=p.grayscale_p),
            A.GaussianBlur(blur_limit=(3, 3), p=p.blur_p),
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(p.erase_size, p.erase_size),
                hole_width_range=(p.erase_size, p.erase_size),
                p=p.erase_p,
            ),
        ]
    )


def reseed(transform: A.BaseCompose, seed: int) -> None:
    """Seed one draw of `transform`: its transforms share one numpy and one Python generator seeded with `seed`.

    Not `set_random_seed`, which gives every transform its own generator seeded identically: each transform's
    first draw is then the same number, so the "apply?" decisions are nested instead of independent (every
    flipped image was also rotated and colour-jittered), and making 2 x 8 generators costs ~90 us per image.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def save(transform: A.Compose, path: Path) -> None:
    with atomic_path(path) as tmp:
        A.save(transform, str(tmp), data_format="json")


def load(path: Path) -> A.Compose:
    return A.load(str(path), data_format="json")


def preview_grid(images: np.ndarray, transform: A.Compose, n: int, seed: int, path: Path) -> None:
    """Save a PNG grid: each column shows an original image above two augmented draws of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=min(n, len(images)), replace=False)
    fig, axes = plt.subplots(3, len(picks), figsize=(len(picks) * 0.9, 3 * 0.9), squeeze=False)
    for col, idx in enumerate(picks):
        original = np.asarray(images[idx])
        views = [original]
        for draw in range(2):
            reseed(transform, int(seed + 1000 * draw + col))
            views.append(transform(image=original)["image"])
        for row, view in enumerate(views):
            axes[row, col].imshow(view)
            axes[row, col].axis("off")
    axes[0, 0].set_title("original", fontsize=6, loc="left")
    axes[1, 0].set_title("augmented", fontsize=6, loc="left")
    fig.tight_layout(pad=0.1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
