"""Stratified K-fold assignment (a versioned artifact, `folds/folds.csv`) of the images the folds hold out: the
training images (`folds.holdout: train`) or the validation classification images (`folds.holdout: validation`)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline.data import read_manifest

log = logging.getLogger(__name__)


def assign_folds(train: pd.DataFrame, k: int, seed: int, what: str = "training images") -> pd.DataFrame:
    """Return ``path, identity, fold`` with each identity's images spread over the k folds.

    Raises:
        ValueError: when there are fewer images than folds (`what` names them in the message).
    """
    if len(train) < k:
        raise ValueError(f"folds.k={k} but only {len(train)} {what}")
    counts = train["identity"].value_counts()
    if (counts < k).all():  # e.g. 2 validation images per identity: sklearn refuses, deal them out in turn
        order = np.random.default_rng(seed).permutation(len(train))
        order = order[np.argsort(train["identity"].to_numpy()[order], kind="stable")]  # identities together
        fold = np.empty(len(train), dtype=np.int64)
        fold[order] = np.arange(len(train)) % k
        return pd.DataFrame({"path": train["path"], "identity": train["identity"], "fold": fold})
    few = counts[counts < k]
    if len(few):
        log.warning(
            "%d identities have fewer than folds.k=%d images (e.g. %s): some folds hold none of their images",
            len(few),
            k,
            list(few.index[:3]),
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = pd.Series(-1, index=train.index, dtype="int64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the sparse-identity case is logged above, once
        for i, (_, held_out) in enumerate(splitter.split(train["path"], train["identity"])):
            fold.iloc[held_out] = i
    return pd.DataFrame({"path": train["path"], "identity": train["identity"], "fold": fold})


def read_fold_ids(path: Path, manifest: pd.DataFrame, manifest_name: str, holdout: str) -> np.ndarray:
    """The fold of each image of `manifest` (the held-out images), from the folds stage's CSV.

    Raises:
        ValueError: when the CSV lists other images (it was written for other data or another `folds.holdout`).
    """
    folds = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not folds["path"].equals(manifest["path"]):
        raise ValueError(
            f"{path} does not list the images of {manifest_name} (folds.holdout: {holdout}): rerun the folds stage"
        )
    return folds["fold"].astype(int).to_numpy()


@dataclass
class LabelledImages:
    """The labelled images of an index with class indices, and the fold of each image the folds hold out: what the
    train stage trains and measures on and the ensemble stage scores out of fold, read one way for both."""

    classes: list[str]  # class index -> identity name (the index stage's `classes` manifest)
    train: pd.DataFrame  # `train` manifest
    val: pd.DataFrame  # `val_classification` manifest
    train_labels: np.ndarray  # class index of each training image
    val_labels: np.ndarray  # class index of each validation classification image
    holdout: str  # folds.holdout: which of the two the folds partition
    fold_ids: np.ndarray  # fold of each held-out image, in its manifest's order

    @property
    def held_manifest(self) -> str:
        return "train" if self.holdout == "train" else "val_classification"


def load_labelled(index: Path, folds_csv: Path, holdout: str) -> LabelledImages:
    """Read the manifests, the class-index map and the folds CSV (checked against the held-out manifest)."""
    classes = read_manifest(index, "classes")["identity"].tolist()
    class_of = {name: i for i, name in enumerate(classes)}
    train = read_manifest(index, "train")
    val = read_manifest(index, "val_classification")
    name = "train" if holdout == "train" else "val_classification"
    fold_ids = read_fold_ids(folds_csv, train if holdout == "train" else val, str(index / f"{name}.csv"), holdout)
    return LabelledImages(
        classes,
        train,
        val,
        train["identity"].map(class_of).to_numpy(),
        val["identity"].map(class_of).to_numpy(),
        holdout,
        fold_ids,
    )
