"""Every metric of the competition in one place: the stages, the tests and the local scorer all call these.

Verification metrics follow scikit-learn exactly (`roc_auc_score` counts ties as half, as Kaggle's scorer
does); EER and TAR@FAR are read off `roc_curve`, so all three agree about the same ROC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as an int8 0/1 vector and scores as float64, or a ValueError saying what is wrong."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"labels and scores differ in length: {len(y)} labels, {len(s)} scores")
    if len(y) == 0:
        raise ValueError("no labels or scores: cannot compute a metric on nothing")
    if s.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} scores are NaN or infinite (first at position {i}: {s[i]})")
    if y.dtype.kind == "b":
        y = y.astype(np.int8)
    if y.dtype.kind not in "iuf" or not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int8)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(f"labels hold only class {int(y[0])}: ROC metrics need both classes present")
    return y, s


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve, exactly as `sklearn.metrics.roc_auc_score` (ties count half)."""
    y, s = _check_binary(labels, scores)
    return float(roc_auc_score(y, s))


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    fnr = 1.0 - tpr
    gap = fnr - fpr  # non-increasing along the curve: +1 at the first point, -1 at the last
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    # The curve is piecewise linear between ROC points, so FPR and FNR cross where the gap interpolates to 0.
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def eer(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Equal error rate: where the false-accept and false-reject rates cross, interpolated on the ROC curve."""
    y, s = _check_binary(labels, scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return _eer_from_roc(fpr, tpr)


def _tar_from_roc(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    ok = fpr <= far
    return float(tpr[ok].max())  # the first ROC point (0, 0) always qualifies


def tar_at_far(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, far: float) -> float:
    """True-accept rate at a false-accept rate: the highest TPR of any threshold whose FPR is <= `far`."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must lie in [0, 1], got {far}")
    y, s = _check_binary(labels, scores)
    # drop_intermediate=False: a dropped collinear point can be exactly the last one with FPR <= far.
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return _tar_from_roc(fpr, tpr, far)


def accuracy(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """Fraction of exact matches (labels compare as given: the string "3" is not the integer 3)."""
    t = np.asarray(y_true, dtype=object)
    p = np.asarray(y_pred, dtype=object)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} and {len(p)}")
    if len(t) == 0:
        raise ValueError("no labels: cannot compute accuracy on nothing")
    return float(np.mean(t == p))


def verification_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, far: float = 1e-3
) -> dict[str, float]:
    """AUC, EER and TAR@FAR from one ROC curve; keys `auc`, `eer`, `tar_at_far`."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must lie in [0, 1], got {far}")
    y, s = _check_binary(labels, scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {
        "auc": float(roc_auc_score(y, s)),
        "eer": _eer_from_roc(fpr, tpr),
        "tar_at_far": _tar_from_roc(fpr, tpr, far),
    }


def roc_table(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, max_points: int = 200
) -> pd.DataFrame:
    """The ROC curve as columns `fpr`, `tpr`, `threshold`, thinned to at most `max_points` rows for plotting.

    Thinning keeps the first and last points and spreads the rest evenly along the curve's length, so the
    steep start of the curve keeps its detail. The first threshold (infinite in sklearn) is replaced by the
    next float above the highest score, so the table stays valid JSON/CSV for dvc plots.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    y, s = _check_binary(labels, scores)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=True)
    thr = thr.astype(np.float64)
    thr[~np.isfinite(thr)] = np.nextafter(s.max(), np.inf)
    if len(fpr) > max_points:
        step = np.hypot(np.diff(fpr), np.diff(tpr))
        along = np.concatenate([[0.0], np.cumsum(step)])
        inner = np.linspace(0.0, along[-1], max_points)[1:-1]
        keep = np.unique(np.concatenate([[0], np.searchsorted(along, inner), [len(fpr) - 1]]))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})
