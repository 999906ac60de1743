"""The verification trials the ensemble gets most wrong: false accepts and false rejects at the EER threshold.

Reads the ensemble stage's per-trial validation scores (`plots/val_scores.csv`: `trial`, `a`, `b`, `label`,
`ensemble`, then one column per fold) and picks, at the threshold where the false-accept and false-reject rates
cross, the different-identity pairs scored highest (worst false accepts) and the same-identity pairs scored lowest
(worst false rejects).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

KINDS = ("false_accepts", "false_rejects")
SCORE_COLUMN = "ensemble"
TRIAL_COLUMNS = ("trial", "a", "b", "label", SCORE_COLUMN)


def read_scores(path: str) -> pd.DataFrame:
    """The per-trial score table, image names as strings; a ValueError names the file and what it lacks."""
    table = pd.read_csv(path, dtype={"a": str, "b": str}, keep_default_na=False)
    missing = [c for c in TRIAL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: lacks the columns {', '.join(missing)} (re-run the ensemble stage)")
    if table.empty:
        raise ValueError(f"{path}: no trials")
    return table


def eer_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score at which the false-accept and false-reject rates cross: trials scoring at or above it are accepted.

    The same crossing as `pipeline.metrics.eer` (the first ROC point whose false-reject rate is at most its
    false-accept rate), computed here rather than added to `pipeline/metrics.py`: the train stage imports that file,
    so touching it would retrain every fold for a picture.
    """
    y = np.asarray(labels)
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError("the EER threshold needs labels of both classes, 0 (different) and 1 (same)")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(scores, dtype=np.float64), drop_intermediate=False)
    crossed = (1.0 - tpr) - fpr <= 0  # false-reject rate at or below the false-accept rate
    return float(thresholds[int(np.argmax(crossed))])


def worst_failures(table: pd.DataFrame, n: int) -> tuple[float, pd.DataFrame]:
    """The EER threshold and up to `n` worst trials of each kind, as rows `kind`, `rank` (1 = worst), the trial's
    columns and `threshold`. Ties keep trial-file order, so the same scores always give the same pictures."""
    scores = table[SCORE_COLUMN].to_numpy(dtype=np.float64)
    labels = table["label"].to_numpy()
    threshold = eer_threshold(labels, scores)
    accepted = scores >= threshold
    picked = {
        "false_accepts": table[(labels == 0) & accepted].sort_values(SCORE_COLUMN, ascending=False, kind="stable"),
        "false_rejects": table[(labels == 1) & ~accepted].sort_values(SCORE_COLUMN, ascending=True, kind="stable"),
    }
    rows = []
    for kind in KINDS:
        worst = picked[kind].head(n)
        rows.append(worst.assign(kind=kind, rank=np.arange(1, len(worst) + 1), threshold=threshold))
    out = pd.concat(rows, ignore_index=True)
    first = ["kind", "rank", *TRIAL_COLUMNS, "threshold"]
    return threshold, out[first + [c for c in out.columns if c not in first]]
