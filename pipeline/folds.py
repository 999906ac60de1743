"""Stratified K-fold assignment of the classification training images (a versioned artifact, `folds/folds.csv`)."""

from __future__ import annotations

import logging
import warnings

import pandas as pd
from sklearn.model_selection import StratifiedKFold

log = logging.getLogger(__name__)


def assign_folds(train: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Return ``path, identity, fold`` with each identity's images spread over the k folds.

    Raises:
        ValueError: when there are fewer images than folds.
    """
    if len(train) < k:
        raise ValueError(f"folds.k={k} but only {len(train)} training images")
    counts = train["identity"].value_counts()
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
