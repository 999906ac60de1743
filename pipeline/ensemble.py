"""Combine the fold models: per-fold and ensemble metrics, ROC data, and the two submissions' contents."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.embeddings import FoldEmbeddings, check_aligned
from pipeline.params import ScoreParams
from pipeline.scoring import normalise, trial_scores, verification_scores


def zscore(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean()) / (scores.std() + 1e-12)


def combined_scores(
    folds: list[FoldEmbeddings],
    split: str,
    trials: pd.DataFrame,
    p: ScoreParams,
    per_fold: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Ensemble trial scores (`score.ensemble`): the mean of each fold's z-scored trial scores (each fold's
    embeddings expanded and scored in its own space; `per_fold` passes scores already computed), or the score of
    the mean L2-normalised embedding."""
    if p.ensemble == "mean_embedding":
        mean = normalise(np.mean([f.embeddings(split) for f in folds], axis=0))
        return verification_scores(mean, folds[0].names(split), trials, **p.scoring_args())
    if per_fold is None:
        per_fold = [verification_scores(f.embeddings(split), f.names(split), trials, **p.scoring_args()) for f in folds]
    return np.mean([zscore(s) for s in per_fold], axis=0).astype(np.float32)


def pixel_baseline_auc(images: np.ndarray, names: list[str], trials: pd.DataFrame) -> float:
    """AUC of the cosine of raw, per-image mean-centred pixels: what a model must beat."""
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    return metrics.roc_auc(trials["label"].to_numpy(), trial_scores(normalise(flat), names, trials))


def evaluate(
    folds: list[FoldEmbeddings],
    val_trials: pd.DataFrame,
    val_labels: np.ndarray,
    p: ScoreParams,
    unseen: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Validation metrics per fold and for the ensemble, and the validation scores (for ROC plots).

    `val_labels` are class indices of the validation classification images, in manifest order. `unseen` maps a
    fold's name to a mask of the validation classification images it did not train on (`folds.holdout:
    validation`); without it no fold trained on any. Each fold's accuracy counts only its unseen images, and the
    ensemble's averages, for each image, the folds that did not see it (out of fold).
    """
    check_aligned(folds)
    labels = val_trials["label"].to_numpy()
    every = np.ones(len(val_labels), dtype=bool)
    masks = {f.name: (unseen or {}).get(f.name, every) for f in folds}
    results: dict[str, dict[str, float]] = {}
    scores: dict[str, np.ndarray] = {}
    for fold in folds:
        s = verification_scores(
            fold.embeddings("val_verification"), fold.names("val_verification"), val_trials, **p.scoring_args()
        )
        scores[fold.name] = s
        m = masks[fold.name]
        results[fold.name] = _metrics(labels, s, p.far, fold.probs("val_classification")[m], val_labels[m])
    s = combined_scores(folds, "val_verification", val_trials, p, [scores[f.name] for f in folds])
    scores["ensemble"] = s
    weights = np.stack([masks[f.name] for f in folds]).astype(np.float32)  # folds x images
    probs = np.einsum("fi,fic->ic", weights, np.stack([f.probs("val_classification") for f in folds]))
    covered = weights.sum(axis=0) > 0  # images some trained fold held out
    results["ensemble"] = _metrics(labels, s, p.far, probs[covered], val_labels[covered])
    return results, scores


def _metrics(labels: np.ndarray, scores: np.ndarray, far: float, probs: np.ndarray, cls_labels: np.ndarray) -> dict:
    v = metrics.verification_metrics(labels, scores, far)
    out = {"val_auc": v["auc"], "val_eer": v["eer"], "val_tar_at_far": v["tar_at_far"]}
    if len(cls_labels):
        out["val_accuracy"] = metrics.accuracy(cls_labels, probs.argmax(axis=1))
    return out


def test_predictions(
    folds: list[FoldEmbeddings], test_trials: pd.DataFrame, p: ScoreParams
) -> tuple[list[str], list[str], np.ndarray]:
    """(classification ids, predicted identity names, verification scores) for the test submissions."""
    check_aligned(folds)
    classes = folds[0].data["classes"]
    probs = np.mean([f.probs("test_classification") for f in folds], axis=0)
    labels = classes[probs.argmax(axis=1)].tolist()  # identity NAMES: the index is only ours
    ids = folds[0].ids("test_classification")
    return ids, labels, combined_scores(folds, "test_verification", test_trials, p)
