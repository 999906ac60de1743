"""What a scale run renders and trains, as params keys: the full-size synthetic competition (the bench's spec,
`pipeline.bench.dataset.synthetic_spec`), a fraction of it or a tiny rehearsal, then the training budget, then the
user's `-S key=value` settings, each layer over the one before."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.params_edit import flatten

if TYPE_CHECKING:
    from pipeline.params import Params

# The budget when the user gives none: one epoch per fold of the full set at batch 128 (378,400 training + 2,300
# held-in validation images = 2,974 steps; train.epochs: auto rounds 2,900 up to it), with a quarter-epoch warm-up
# (the params default, one epoch, would leave no epoch after it). On this project's 2-core machine the train stage
# ran at about 2.3 steps/s at full size (22 min per epoch, per-epoch validation over 100k trials included), and the
# stages before it took 11 min, so one epoch per fold keeps the whole run near an hour.
DEFAULT_TRAIN_STEPS = 2900
DEFAULT_WARMUP_EPOCHS = 0.25

# The data keys every scale run sets: rendered, and trained on both training folders (2,300 + 2,000 identities).
FULL_SIZE_DATA = {"data.source": "synthetic", "data.train_subsets": ["medium", "large"]}
# The scale run's budget is phase 1 alone: `finetune.epochs: auto` rounds its 120 steps up to whole epochs, a
# second full 2,974-step epoch per fold at this size, and the triplet fine-tune was measured on 111 identities
# only (README: Real faces). A recipe or `-S finetune.epochs=...` turns it back on.
NO_FINETUNE = {"finetune.epochs": 0}

# --tiny: the same flow in well under a minute of CPU (the sizes of tests/conftest.py's tiny project, one epoch).
TINY = {
    "synthetic.identities": 24,
    "synthetic.large_identities": 2,
    "synthetic.train_images": 8,
    "synthetic.val_images": 2,
    "synthetic.test_images": 2,
    "synthetic.val_verification_identities": 16,
    "synthetic.test_verification_identities": 8,
    "synthetic.verification_images": 6,
    "synthetic.val_trials": 240,
    "synthetic.test_trials": 60,
    "train.epochs": 1,
    "train.warmup_epochs": 0.0,
    "train.batch_size": 32,
    "train.num_workers": 0,
    "embed.batch_size": 128,
    "augment.preview_images": 4,
    "source.identities": 8,  # the source stage too, at a rehearsal's size
    "source.images_per_identity": 4,
    "source.steps": 2,
    "source.batch_size": 16,
}


def size_keys(scale: float, image_size: int) -> dict[str, Any]:
    """The synthetic keys of `scale` x the real competition, rendered at the model's input size."""
    from pipeline.bench.dataset import synthetic_spec

    spec = synthetic_spec(scale, image_size).model_dump(mode="json", exclude={"difficulty", "jpeg_quality"})
    return {**FULL_SIZE_DATA, **flatten({"synthetic": spec})}


def budget_keys(train_steps: int | None, epochs: int | None) -> dict[str, Any]:
    """train.steps with epochs: auto (the fewest whole epochs reaching it), or exactly `epochs` epochs."""
    if epochs is not None:
        return {"train.epochs": epochs}
    if train_steps is not None:
        return {"train.epochs": "auto", "train.steps": train_steps}
    return {}


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`-S key=value` settings, as `dvc exp run -S` reads them: the value is YAML (`[medium, large]`, `0.1`, `auto`).

    Raises:
        ValueError: for an item without `=`.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-S {item!r}: expected key=value, e.g. -S train.lr=0.01")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def run_keys(
    scale: float,
    tiny: bool,
    image_size: int,
    train_steps: int | None = None,
    epochs: int | None = None,
    recipe: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every params key the run sets, by dotted name; later layers win: no fine-tune (`NO_FINETUNE`), recipe,
    size, budget, settings.

    Without a budget (and without a recipe, whose own budget then stands) the full-size default
    `DEFAULT_TRAIN_STEPS` with `DEFAULT_WARMUP_EPOCHS` applies; --tiny's own is one epoch.
    """
    keys: dict[str, Any] = {**NO_FINETUNE, **(recipe or {})}
    keys.update(size_keys(scale, image_size))
    if tiny:
        keys.update(FULL_SIZE_DATA)
        keys.update(TINY)
    elif train_steps is None and epochs is None and not recipe:
        train_steps = DEFAULT_TRAIN_STEPS
        keys["train.warmup_epochs"] = DEFAULT_WARMUP_EPOCHS
    keys.update(budget_keys(train_steps, epochs))
    keys.update(settings or {})
    return keys


def fold_plan(p: Params) -> tuple[int, int]:
    """(epochs, optimiser steps per epoch) each fold will train, from the synthetic sizes: the training images of
    `data.train_subsets` plus, with `folds.holdout: validation`, the validation images outside the fold, in whole
    batches (the engine drops the ragged last one); epochs as the engine plans them (`pipeline.engine.plan_budget`).
    """
    s, t = p.synthetic, p.train
    images = s.identities * s.train_images
    images += s.large_identities * s.train_images if "large" in p.data.train_subsets else 0
    if p.folds.holdout == "validation":
        images += s.identities * s.val_images * (p.folds.k - 1) // p.folds.k
    steps_per_epoch = images // t.batch_size
    if steps_per_epoch == 0:
        return 0, 0
    epochs = t.epochs if t.epochs != "auto" else max(1, math.ceil(t.steps / steps_per_epoch))
    return epochs, steps_per_epoch


def budget_problem(p: Params) -> str | None:
    """Why the training budget cannot run at these sizes (found now, not after the render), or None."""
    epochs, per_epoch = fold_plan(p)
    if per_epoch == 0:
        return f"train.batch_size {p.train.batch_size} is larger than a fold's training images: lower it (-S)"
    if p.train.warmup_epochs >= epochs:
        enough = math.floor(p.train.warmup_epochs) + 1  # the fewest epochs above the warmup
        return (
            f"the budget gives {epochs} epoch(s) of {per_epoch:,} steps per fold, but train.warmup_epochs is "
            f"{p.train.warmup_epochs:g} and must be below that: give --train-steps above {per_epoch * (enough - 1):,} "
            f"or --epochs {enough}, or a shorter warmup (-S train.warmup_epochs=0.5)"
        )
    return None
