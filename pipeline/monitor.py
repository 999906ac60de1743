"""What the train stage measures after an epoch: accuracy on held-out labelled images and the AUC of the plain
cosine of the validation trials' flip-TTA embeddings (no scale TTA).

The cosine here is deliberately not `pipeline.scoring` (`score.*`: centring, query expansion, the Euclidean
metric): the train stage must not depend on what only the ensemble stage uses, so that a scoring edit never
retrains a fold. The logged `val_auc` therefore tracks learning, and sits below the ensemble stage's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import metrics
from pipeline.inference import infer_sharded, settings
from pipeline.params import Params


@dataclass
class EvalSets:
    """Arrays evaluated after each epoch; any may be None."""

    val_images: np.ndarray | None = None  # validation_classification
    val_labels: np.ndarray | None = None
    fold_images: np.ndarray | None = None  # held-out fold of the training images
    fold_labels: np.ndarray | None = None
    ver_images: np.ndarray | None = None  # validation verification images
    ver_names: list[str] = field(default_factory=list)
    trials: pd.DataFrame | None = None  # columns a, b, label (`trial_files.read_trial_manifest`)


def cosine_auc(embeddings: np.ndarray, names: list[str], trials: pd.DataFrame) -> float:
    """ROC AUC of the cosine between the two images of each trial (`embeddings` rows are unit length)."""
    index = pd.Index(np.asarray(names, dtype=object))
    ia = index.get_indexer(trials["a"].to_numpy(dtype=object))
    ib = index.get_indexer(trials["b"].to_numpy(dtype=object))
    if (ia < 0).any() or (ib < 0).any():
        row = int(np.flatnonzero((ia < 0) | (ib < 0))[0])
        raise ValueError(f"validation trial {row + 1} names an image that is not among the verification images")
    scores = np.einsum("ij,ij->i", embeddings[ia], embeddings[ib])
    return metrics.roc_auc(trials["label"].to_numpy(), scores)


def evaluate(model: nn.Module, sets: EvalSets, device: torch.device, cfg: Params) -> dict[str, float]:
    """`val_accuracy` / `fold_accuracy` of the head's argmax and, with `train.verification_eval`, `val_auc`.

    Inference runs as the embed stage's does (`embed.batch_size`, `embed.flip_tta`, `embed.amp`), without the
    stage's scale TTA (`embed.scales`), which is the ensemble's business like `score.*`."""
    kw = settings(cfg, device, scale_tta=False)
    out: dict[str, float] = {}
    if sets.val_images is not None and len(sets.val_images):
        _, p = infer_sharded(model, sets.val_images, **kw)
        out["val_accuracy"] = metrics.accuracy(sets.val_labels, p.argmax(1))
    if sets.fold_images is not None and len(sets.fold_images):
        _, p = infer_sharded(model, sets.fold_images, **kw)
        out["fold_accuracy"] = metrics.accuracy(sets.fold_labels, p.argmax(1))
    if cfg.train.verification_eval and sets.ver_images is not None and sets.trials is not None:
        emb, _ = infer_sharded(model, sets.ver_images, probs=False, **kw)
        out["val_auc"] = cosine_auc(emb, sets.ver_names, sets.trials)
    return out
