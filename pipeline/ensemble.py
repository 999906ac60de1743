"""Combine the fold models: per-fold and ensemble metrics, ROC data, and the two submissions' contents."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.classify import balance_applies, balanced, class_probs
from pipeline.embeddings import FoldEmbeddings, check_aligned
from pipeline.folds import LabelledImages
from pipeline.params import ClassifyParams, ScoreParams
from pipeline.scoring import normalise, trial_scores, verification_scores, within_class_whitening


def zscore(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean()) / (scores.std() + 1e-12)


class Whitenings:
    """`score.whiten`'s matrices (`scoring.within_class_whitening`), each fitted once, when first asked for, and
    used for validation and test alike: one per fold from its embeddings of the labelled images (every training
    image and validation classification image, with their identities), and one from the folds' mean embeddings
    for `score.ensemble: mean_embedding`. Without `score.whiten` every one is None."""

    def __init__(self, folds: list[FoldEmbeddings], labelled: LabelledImages, p: ScoreParams):
        self.folds, self.p = folds, p
        self.labels = np.concatenate([labelled.train_labels, labelled.val_labels])
        self.fitted: dict[str, np.ndarray] = {}

    def _fit(self, key: str, embeddings_of) -> np.ndarray | None:
        if not self.p.whiten:
            return None
        if key not in self.fitted:
            labelled = np.concatenate([embeddings_of("train"), embeddings_of("val_classification")])
            self.fitted[key] = within_class_whitening(labelled, self.labels, self.p.whiten_shrinkage)
        return self.fitted[key]

    def of(self, fold: FoldEmbeddings) -> np.ndarray | None:
        return self._fit(fold.name, fold.embeddings)

    def of_mean(self) -> np.ndarray | None:
        return self._fit(" mean", lambda split: mean_embeddings(self.folds, split))


def mean_embeddings(folds: list[FoldEmbeddings], split: str) -> np.ndarray:
    return normalise(np.mean([f.embeddings(split) for f in folds], axis=0))


def combined_scores(
    folds: list[FoldEmbeddings],
    split: str,
    trials: pd.DataFrame,
    p: ScoreParams,
    per_fold: list[np.ndarray] | None = None,
    whitenings: Whitenings | None = None,
) -> np.ndarray:
    """Ensemble trial scores (`score.ensemble`): the mean of each fold's z-scored trial scores (each fold's
    embeddings whitened, expanded and scored in its own space; `per_fold` passes scores already computed), or the
    score of the mean L2-normalised embedding. `score.whiten` needs `whitenings`."""
    if p.whiten and whitenings is None:
        raise ValueError("score.whiten: combined_scores needs the Whitenings of these folds")
    if p.ensemble == "mean_embedding":
        mean = mean_embeddings(folds, split)
        white = whitenings.of_mean() if whitenings else None
        return verification_scores(mean, folds[0].names(split), trials, **p.scoring_args(), whitening=white)
    if per_fold is None:
        per_fold = [
            verification_scores(
                f.embeddings(split),
                f.names(split),
                trials,
                **p.scoring_args(),
                whitening=whitenings.of(f) if whitenings else None,
            )
            for f in folds
        ]
    return np.mean([zscore(s) for s in per_fold], axis=0).astype(np.float32)


def pixel_baseline_auc(images: np.ndarray, names: list[str], trials: pd.DataFrame) -> float:
    """AUC of the cosine of raw, per-image mean-centred pixels: what a model must beat."""
    flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    return metrics.roc_auc(trials["label"].to_numpy(), trial_scores(normalise(flat), names, trials))


def fold_class_probs(
    fold: FoldEmbeddings, split: str, rows: np.ndarray, labelled: LabelledImages, p: ClassifyParams
) -> np.ndarray:
    """`classify.method`'s class probabilities of `split`'s images at `rows` (a boolean mask) from one fold, balanced
    over those images when `classify.balance` says so. The prototypes are the fold's embeddings of every labelled
    image outside the queries: all training images and the validation classification images not at `rows` (for
    the test images, all of them)."""
    held = rows if split == "val_classification" else np.zeros(len(labelled.val), dtype=bool)
    probs = class_probs(
        fold.probs(split)[rows],
        fold.embeddings(split)[rows] if p.method != "head" else None,
        np.concatenate([fold.embeddings("train"), fold.embeddings("val_classification")[~held]])
        if p.method != "head"
        else None,
        np.concatenate([labelled.train_labels, labelled.val_labels[~held]]),
        p,
    )
    return balanced(probs) if balance_applies(p, labelled.val_labels, len(labelled.classes)) else probs


def evaluate(
    folds: list[FoldEmbeddings],
    val_trials: pd.DataFrame,
    labelled: LabelledImages,
    p: ScoreParams,
    c: ClassifyParams,
    unseen: dict[str, np.ndarray] | None = None,
    whitenings: Whitenings | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], np.ndarray]:
    """Validation metrics per fold and for the ensemble, the validation scores (for ROC plots), and the ensemble's
    out-of-fold class probabilities of the validation classification images (rows no fold held out are zero).

    `unseen` maps a fold's name to a mask of the validation classification images it did not train on
    (`folds.holdout: validation`); without it no fold trained on any. Each fold's accuracy counts only its unseen
    images, and the ensemble's averages, for each image, the folds that did not see it (out of fold).
    `whitenings` passes matrices already fitted (the stage shares them with `test_predictions`).
    """
    check_aligned(folds)
    whitenings = whitenings or Whitenings(folds, labelled, p)
    labels = val_trials["label"].to_numpy()
    val_labels = labelled.val_labels
    every = np.ones(len(val_labels), dtype=bool)
    masks = {f.name: (unseen or {}).get(f.name, every) for f in folds}
    results: dict[str, dict[str, float]] = {}
    scores: dict[str, np.ndarray] = {}
    fold_probs = np.zeros((len(folds), len(val_labels), len(labelled.classes)), dtype=np.float32)
    for i, fold in enumerate(folds):
        s = verification_scores(
            fold.embeddings("val_verification"),
            fold.names("val_verification"),
            val_trials,
            **p.scoring_args(),
            whitening=whitenings.of(fold),
        )
        scores[fold.name] = s
        m = masks[fold.name]
        fold_probs[i, m] = fold_class_probs(fold, "val_classification", m, labelled, c)
        results[fold.name] = _metrics(labels, s, p.far, fold_probs[i, m], val_labels[m])
    s = combined_scores(folds, "val_verification", val_trials, p, [scores[f.name] for f in folds], whitenings)
    scores["ensemble"] = s
    weights = np.stack([masks[f.name] for f in folds]).astype(np.float32)  # folds x images
    covered = weights.sum(axis=0) > 0  # images some trained fold held out
    probs = np.einsum("fi,fic->ic", weights, fold_probs) / np.maximum(weights.sum(axis=0), 1.0)[:, None]
    results["ensemble"] = _metrics(labels, s, p.far, probs[covered], val_labels[covered])
    return results, scores, probs


def _metrics(labels: np.ndarray, scores: np.ndarray, far: float, probs: np.ndarray, cls_labels: np.ndarray) -> dict:
    v = metrics.verification_metrics(labels, scores, far)
    out = {"val_auc": v["auc"], "val_eer": v["eer"], "val_tar_at_far": v["tar_at_far"]}
    if len(cls_labels):
        out["val_accuracy"] = metrics.accuracy(cls_labels, probs.argmax(axis=1))
    return out


def test_predictions(
    folds: list[FoldEmbeddings],
    test_trials: pd.DataFrame,
    labelled: LabelledImages,
    p: ScoreParams,
    c: ClassifyParams,
    whitenings: Whitenings | None = None,
) -> tuple[list[str], list[str], np.ndarray]:
    """(classification ids, predicted identity names, verification scores) for the test submissions."""
    check_aligned(folds)
    whitenings = whitenings or Whitenings(folds, labelled, p)
    classes = folds[0].data["classes"]
    every = np.ones(len(folds[0].ids("test_classification")), dtype=bool)
    probs = np.mean([fold_class_probs(f, "test_classification", every, labelled, c) for f in folds], axis=0)
    labels = classes[probs.argmax(axis=1)].tolist()  # identity NAMES: the index is only ours
    ids = folds[0].ids("test_classification")
    return ids, labels, combined_scores(folds, "test_verification", test_trials, p, whitenings=whitenings)


def trial_table(trials: pd.DataFrame, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per-trial scores (plot data, `dvc plots diff` compares experiments trial by trial): `trial` (line of the
    trial file), `a`, `b`, `label`, the ensemble's score and each fold's."""
    table = pd.DataFrame(
        {
            "trial": trials.index.to_numpy() + 1,
            "a": trials["a"].astype(str).to_numpy(),
            "b": trials["b"].astype(str).to_numpy(),
            "label": trials["label"].to_numpy(),
        }
    )
    order = ["ensemble"] + [name for name in scores if name != "ensemble"]
    for name in order:
        table[name] = np.round(scores[name], 6)
    return table


def prediction_table(labelled: LabelledImages, probs: np.ndarray) -> pd.DataFrame:
    """The ensemble's out-of-fold prediction of each validation classification image some fold held out: `path`,
    true `identity`, `predicted` identity and its probability (`confidence`)."""
    covered = probs.sum(axis=1) > 0
    classes = np.asarray(labelled.classes, dtype=object)
    best = probs.argmax(axis=1)
    return pd.DataFrame(
        {
            "path": labelled.val["path"].to_numpy()[covered],
            "identity": classes[labelled.val_labels[covered]],
            "predicted": classes[best[covered]],
            "confidence": np.round(probs[covered, best[covered]], 6),
        }
    )
