import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from pipeline import metrics

# Two positives scored 3 and 2, two negatives scored 2 and 1. ROC points (fpr, tpr): (0,0) (0,.5) (.5,1) (1,1).
HAND_LABELS = [1, 1, 0, 0]
HAND_SCORES = [3.0, 2.0, 2.0, 1.0]


def brute_force_roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) for "accept when score >= t" at every distinct score, plus t = +inf."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    tpr = np.array([(pos >= t).mean() for t in thresholds])
    return fpr, tpr


def random_case(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if ties:
        scores = np.round(scores, 1)
    return labels, scores


def test_hand_case() -> None:
    # AUC: of the 4 positive/negative pairs, 3 are ordered right and (2, 2) is a tie worth half.
    assert metrics.roc_auc(HAND_LABELS, HAND_SCORES) == pytest.approx(0.875)
    # The segment from (0,.5) to (.5,1) has fnr = .5 - fpr, which meets fpr at .25.
    assert metrics.eer(HAND_LABELS, HAND_SCORES) == pytest.approx(0.25)
    assert metrics.tar_at_far(HAND_LABELS, HAND_SCORES, 0.0) == pytest.approx(0.5)
    assert metrics.tar_at_far(HAND_LABELS, HAND_SCORES, 0.49) == pytest.approx(0.5)
    assert metrics.tar_at_far(HAND_LABELS, HAND_SCORES, 0.5) == pytest.approx(1.0)


def test_eer_extremes() -> None:
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert metrics.eer([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.eer([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # one tie: the diagonal from (0,0) to (1,1)


def test_tar_at_far_keeps_collinear_points() -> None:
    # ROC points (0,0) (1/3,1/3) (2/3,2/3) (1,1) are collinear; sklearn's default thins out (2/3,2/3), which
    # would report 1/3 at far=0.7.
    labels, scores = [1, 0, 1, 0, 1, 0], [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    assert len(roc_curve(labels, scores)[0]) == 3
    assert metrics.tar_at_far(labels, scores, 0.7) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(seed: int, ties: bool) -> None:
    labels, scores = random_case(seed, ties=ties)
    assert metrics.roc_auc(labels, scores) == roc_auc_score(labels, scores)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_eer_lies_between_roc_bounds(seed: int, ties: bool) -> None:
    labels, scores = random_case(seed, ties=ties)
    fpr, tpr = brute_force_roc(labels, scores)
    fnr = 1 - tpr
    value = metrics.eer(labels, scores)
    # Interpolated between two neighbouring ROC points, so it cannot beat the best point on either rate.
    assert np.max(np.minimum(fpr, fnr)) - 1e-12 <= value <= np.min(np.maximum(fpr, fnr)) + 1e-12


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("far", [0.0, 1e-3, 0.05, 0.3, 1.0])
def test_tar_at_far_matches_brute_force(seed: int, far: float) -> None:
    labels, scores = random_case(seed, ties=seed % 2 == 0)
    fpr, tpr = brute_force_roc(labels, scores)
    assert metrics.tar_at_far(labels, scores, far) == pytest.approx(tpr[fpr <= far].max())


def test_verification_metrics_agree_with_single_metrics() -> None:
    labels, scores = random_case(7, ties=True)
    result = metrics.verification_metrics(labels, scores, far=0.1)
    assert set(result) == {"auc", "eer", "tar_at_far"}
    assert result["auc"] == metrics.roc_auc(labels, scores)
    assert result["eer"] == metrics.eer(labels, scores)
    assert result["tar_at_far"] == metrics.tar_at_far(labels, scores, 0.1)


def test_accuracy() -> None:
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == 0.75
    assert metrics.accuracy(["3"], [3]) == 0.0  # an identity name is not a class index
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="nothing"):
        metrics.accuracy([], [])


def test_roc_table_is_thinned_and_plottable() -> None:
    labels, scores = random_case(3, n=5000)
    table = metrics.roc_table(labels, scores, max_points=50)
    assert list(table.columns) == ["fpr", "tpr", "threshold"]
    assert 2 <= len(table) <= 50
    assert (table.fpr.iloc[0], table.tpr.iloc[0]) == (0.0, 0.0)
    assert (table.fpr.iloc[-1], table.tpr.iloc[-1]) == (1.0, 1.0)
    assert np.isfinite(table.threshold).all()
    assert table.threshold.iloc[0] > scores.max()
    assert (np.diff(table.fpr) >= 0).all() and (np.diff(table.tpr) >= 0).all()
    small = metrics.roc_table(HAND_LABELS, HAND_SCORES)
    assert small[["fpr", "tpr"]].to_numpy().tolist() == [[0, 0], [0, 0.5], [0.5, 1], [1, 1]]


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 1], [0.1, np.nan], "NaN or infinite"),
        ([0, 1], [np.inf, 0.2], "NaN or infinite"),
        ([1, 1], [0.1, 0.2], "both classes"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([], [], "nothing"),
        ([0, 1], ["a", "b"], "must be numbers"),
    ],
)
@pytest.mark.parametrize("metric", [metrics.roc_auc, metrics.eer, metrics.verification_metrics, metrics.roc_table])
def test_bad_inputs_are_refused(labels: list, scores: list, message: str, metric) -> None:
    with pytest.raises(ValueError, match=message):
        metric(labels, scores)


integer_scores = st.lists(st.tuples(st.integers(0, 1), st.integers(-40, 40)), min_size=2, max_size=60).filter(
    lambda rows: len({label for label, _ in rows}) == 2
)
MONOTONE = [lambda x: 3 * x - 5, lambda x: x**3, lambda x: np.exp(x / 8), np.arctan]


@settings(max_examples=100, deadline=None)
@given(integer_scores, st.sampled_from(range(len(MONOTONE))))
def test_auc_property_matches_sklearn_and_ignores_monotone_transforms(rows: list, which: int) -> None:
    labels = np.array([label for label, _ in rows])
    scores = np.array([score for _, score in rows], dtype=np.float64)
    auc = metrics.roc_auc(labels, scores)
    assert auc == roc_auc_score(labels, scores)
    # Integer scores keep ties exact under these transforms, so the ranking (and AUC) cannot change.
    assert metrics.roc_auc(labels, MONOTONE[which](scores)) == pytest.approx(auc, abs=1e-12)
    assert metrics.eer(labels, MONOTONE[which](scores)) == pytest.approx(metrics.eer(labels, scores), abs=1e-12)
