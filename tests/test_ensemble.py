"""Fold combination: per-fold and out-of-fold ensemble accuracy, ensemble scores."""

import numpy as np
import pandas as pd
import pytest

from pipeline.embeddings import FoldEmbeddings
from pipeline.ensemble import evaluate
from pipeline.params import ScoreParams


def fold(name: str, probs: np.ndarray, embeddings: np.ndarray) -> FoldEmbeddings:
    names = np.array([f"{i}.jpg" for i in range(len(embeddings))])
    return FoldEmbeddings(
        name,
        {
            "classes": np.array(["a", "b"]),
            "val_verification_names": names,
            "test_verification_names": names,
            "test_classification_ids": np.array(["0"]),
            "val_verification_embeddings": embeddings,
            "val_classification_probs": probs,
        },
    )


TRIALS = pd.DataFrame({"a": ["0.jpg", "0.jpg"], "b": ["1.jpg", "2.jpg"], "label": [1, 0]})
EMB = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
EMB /= np.linalg.norm(EMB, axis=1, keepdims=True)
LABELS = np.array([0, 1, 0, 1])
RIGHT = np.eye(2, dtype=np.float32)[LABELS] * 0.8 + 0.1  # every image classified correctly
WRONG = 1.0 - RIGHT


def test_without_masks_every_fold_is_scored_on_every_validation_image():
    results, scores = evaluate([fold("fold0", RIGHT, EMB), fold("fold1", WRONG, EMB)], TRIALS, LABELS, ScoreParams())
    assert results["fold0"]["val_accuracy"] == 1.0 and results["fold1"]["val_accuracy"] == 0.0
    assert results["ensemble"]["val_auc"] == 1.0 and set(scores) == {"fold0", "fold1", "ensemble"}


def test_out_of_fold_accuracy_uses_only_the_images_a_fold_did_not_train_on():
    # fold0 saw images 2 and 3 in training (and memorised them: right there, wrong elsewhere); fold1 saw 0 and 1.
    p0 = np.where(np.array([1, 1, 0, 0])[:, None] == 1, WRONG, RIGHT)
    p1 = np.where(np.array([0, 0, 1, 1])[:, None] == 1, WRONG, RIGHT)
    unseen = {"fold0": np.array([True, True, False, False]), "fold1": np.array([False, False, True, True])}
    folds = [fold("fold0", p0, EMB), fold("fold1", p1, EMB)]
    results, _ = evaluate(folds, TRIALS, LABELS, ScoreParams(), unseen)
    assert results["fold0"]["val_accuracy"] == 0.0 and results["fold1"]["val_accuracy"] == 0.0
    # the plain mean of both folds' probabilities would be a tie everywhere; out of fold it is all wrong
    assert results["ensemble"]["val_accuracy"] == 0.0

    unseen = {"fold0": np.array([False, False, True, True]), "fold1": np.array([True, True, False, False])}
    results, _ = evaluate(folds, TRIALS, LABELS, ScoreParams(), unseen)
    assert results["ensemble"]["val_accuracy"] == 1.0


def test_images_no_trained_fold_held_out_are_left_out_of_the_ensemble_accuracy():
    unseen = {"fold0": np.array([True, False, False, False])}  # folds.train: [0]; the others were trained on
    results, _ = evaluate([fold("fold0", RIGHT, EMB)], TRIALS, LABELS, ScoreParams(), unseen)
    assert results["ensemble"]["val_accuracy"] == pytest.approx(1.0)
    wrong_elsewhere = RIGHT.copy()
    wrong_elsewhere[1:] = WRONG[1:]
    results, _ = evaluate([fold("fold0", wrong_elsewhere, EMB)], TRIALS, LABELS, ScoreParams(), unseen)
    assert results["ensemble"]["val_accuracy"] == 1.0


def test_centring_subtracts_the_mean_embedding_of_the_scored_images():
    from pipeline.scoring import verification_scores

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4)).astype(np.float32) + 5.0  # a large shared direction
    names = [f"{i}.jpg" for i in range(6)]
    trials = pd.DataFrame({"a": ["0.jpg", "2.jpg"], "b": ["1.jpg", "3.jpg"]})
    plain = verification_scores(emb, names, trials)
    centred = verification_scores(emb, names, trials, center=True)
    c = emb - emb.mean(axis=0)
    want = [c[a] @ c[b] / np.linalg.norm(c[a]) / np.linalg.norm(c[b]) for a, b in ((0, 1), (2, 3))]
    np.testing.assert_allclose(centred, want, rtol=1e-5)
    assert (plain > 0.9).all()  # without centring the shared direction dominates
    np.testing.assert_allclose(
        verification_scores(emb, names, trials, "euclidean", center=True),
        verification_scores(emb, names, trials, "euclidean"),
        rtol=1e-5,
    )


def test_evaluate_reuses_the_fold_scores_for_the_mean_score_ensemble():
    """evaluate() hands its per-fold scores to the ensemble instead of expanding every fold again: same result."""
    from pipeline.ensemble import combined_scores

    rng = np.random.default_rng(1)
    emb = [rng.normal(size=(8, 4)).astype(np.float32) for _ in range(2)]
    trials = pd.DataFrame({"a": ["0.jpg", "2.jpg", "4.jpg"], "b": ["1.jpg", "3.jpg", "7.jpg"], "label": [1, 0, 1]})
    folds = [fold(f"fold{k}", np.tile(RIGHT[:1], (4, 1)), e) for k, e in enumerate(emb)]
    p = ScoreParams(query_expansion=2, ensemble="mean_score")
    _, scores = evaluate(folds, trials, LABELS, p)
    np.testing.assert_allclose(scores["ensemble"], combined_scores(folds, "val_verification", trials, p), rtol=1e-6)
    assert not np.allclose(
        scores["ensemble"],
        combined_scores(folds, "val_verification", trials, p.model_copy(update={"ensemble": "mean_embedding"})),
    )
