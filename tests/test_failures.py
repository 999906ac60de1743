import numpy as np
import pandas as pd
import pytest

from pipeline import metrics
from pipeline.failures import eer_threshold, read_scores, worst_failures


def table(labels, scores, folds=1):
    t = pd.DataFrame(
        {
            "trial": np.arange(1, len(labels) + 1),
            "a": [f"a{i}.jpg" for i in range(len(labels))],
            "b": [f"b{i}.jpg" for i in range(len(labels))],
            "label": labels,
            "ensemble": scores,
        }
    )
    for k in range(folds):
        t[f"fold{k}"] = np.asarray(scores) * (k + 2)
    return t


@pytest.mark.parametrize("seed", range(5))
def test_threshold_is_where_the_error_rates_cross(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = labels + rng.normal(0, 0.8, 300)
    t = eer_threshold(labels, scores)
    far = np.mean(scores[labels == 0] >= t)
    frr = np.mean(scores[labels == 1] < t)
    assert frr <= far  # the first ROC point past the crossing, as pipeline.metrics.eer reads it
    assert abs(far - metrics.eer(labels, scores)) <= 1.0 / (labels == 0).sum() + 1e-9
    assert abs(frr - far) <= 2.0 / min((labels == 0).sum(), (labels == 1).sum())


def test_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        eer_threshold(np.ones(4, dtype=int), np.arange(4.0))


def test_worst_failures_are_the_most_wrong_of_each_kind():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.9, 0.2, 0.6, 0.1, 0.8, 0.3, 0.05, 0.7]
    threshold, worst = worst_failures(table(labels, scores, folds=2), n=5)
    assert 0.1 < threshold <= 0.6
    accepts = worst[worst["kind"] == "false_accepts"]
    rejects = worst[worst["kind"] == "false_rejects"]
    assert (accepts["label"] == 0).all() and (accepts["ensemble"] >= threshold).all()
    assert (rejects["label"] == 1).all() and (rejects["ensemble"] < threshold).all()
    assert accepts["ensemble"].tolist() == sorted(accepts["ensemble"], reverse=True)  # highest-scored first
    assert rejects["ensemble"].tolist() == sorted(rejects["ensemble"])  # lowest-scored first
    assert accepts["rank"].tolist() == list(range(1, len(accepts) + 1))
    assert list(worst.columns[:8]) == ["kind", "rank", "trial", "a", "b", "label", "ensemble", "threshold"]
    assert {"fold0", "fold1"} <= set(worst.columns)  # each fold's score of the trial comes along


def test_n_caps_each_kind_and_ties_keep_trial_order():
    labels = [0] * 6 + [1] * 6
    scores = [0.9] * 6 + [0.1] * 3 + [0.95] * 3  # every different pair ties
    _, worst = worst_failures(table(labels, scores), n=2)
    accepts = worst[worst["kind"] == "false_accepts"]
    assert len(accepts) == 2 and accepts["trial"].tolist() == [1, 2]
    assert (worst["kind"] == "false_rejects").sum() <= 2


def test_read_scores_names_the_missing_columns(tmp_path):
    path = tmp_path / "val_scores.csv"
    path.write_text("trial,a,b,label\n1,x.jpg,y.jpg,1\n")
    with pytest.raises(ValueError, match="ensemble"):
        read_scores(str(path))
    path.write_text("trial,a,b,label,ensemble\n1,007.jpg,008.jpg,1,0.5\n")
    assert read_scores(str(path))["a"].tolist() == ["007.jpg"]
