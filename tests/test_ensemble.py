"""Fold combination: per-fold and out-of-fold ensemble accuracy (head and prototypes), ensemble scores, the
per-trial and per-image plot tables."""

import numpy as np
import pandas as pd
import pytest

from pipeline import ensemble
from pipeline.embeddings import FoldEmbeddings
from pipeline.ensemble import evaluate, prediction_table, trial_table
from pipeline.folds import LabelledImages
from pipeline.params import ClassifyParams, ScoreParams


def fold(name: str, probs: np.ndarray, embeddings: np.ndarray, **extra: np.ndarray) -> FoldEmbeddings:
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
            **extra,
        },
    )


def labelled_images(val_labels: np.ndarray, train_labels: np.ndarray | None = None) -> LabelledImages:
    classes = ["a", "b"]
    train_labels = np.array([0, 1]) if train_labels is None else train_labels
    train = pd.DataFrame({"path": [f"t{i}.jpg" for i in range(len(train_labels))]})
    val = pd.DataFrame({"path": [f"v{i}.jpg" for i in range(len(val_labels))]})
    fold_ids = np.arange(len(val_labels)) % 2
    return LabelledImages(classes, train, val, train_labels, val_labels, "validation", fold_ids)


TRIALS = pd.DataFrame({"a": ["0.jpg", "0.jpg"], "b": ["1.jpg", "2.jpg"], "label": [1, 0]})
EMB = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
EMB /= np.linalg.norm(EMB, axis=1, keepdims=True)
LABELS = np.array([0, 1, 0, 1])
LAB = labelled_images(LABELS)
HEAD = ClassifyParams(method="head", balance=False)
# These fakes hold no training-image embeddings to fit a whitening on; tests that whiten say so by name.
PLAIN = ScoreParams(whiten=False)
RIGHT = np.eye(2, dtype=np.float32)[LABELS] * 0.8 + 0.1  # every image classified correctly
WRONG = 1.0 - RIGHT


def test_without_masks_every_fold_is_scored_on_every_validation_image():
    results, scores, _ = evaluate([fold("fold0", RIGHT, EMB), fold("fold1", WRONG, EMB)], TRIALS, LAB, PLAIN, HEAD)
    assert results["fold0"]["val_accuracy"] == 1.0 and results["fold1"]["val_accuracy"] == 0.0
    assert results["ensemble"]["val_auc"] == 1.0 and set(scores) == {"fold0", "fold1", "ensemble"}


def test_out_of_fold_accuracy_uses_only_the_images_a_fold_did_not_train_on():
    # fold0 saw images 2 and 3 in training (and memorised them: right there, wrong elsewhere); fold1 saw 0 and 1.
    p0 = np.where(np.array([1, 1, 0, 0])[:, None] == 1, WRONG, RIGHT)
    p1 = np.where(np.array([0, 0, 1, 1])[:, None] == 1, WRONG, RIGHT)
    unseen = {"fold0": np.array([True, True, False, False]), "fold1": np.array([False, False, True, True])}
    folds = [fold("fold0", p0, EMB), fold("fold1", p1, EMB)]
    results, _, _ = evaluate(folds, TRIALS, LAB, PLAIN, HEAD, unseen)
    assert results["fold0"]["val_accuracy"] == 0.0 and results["fold1"]["val_accuracy"] == 0.0
    # the plain mean of both folds' probabilities would be a tie everywhere; out of fold it is all wrong
    assert results["ensemble"]["val_accuracy"] == 0.0

    unseen = {"fold0": np.array([False, False, True, True]), "fold1": np.array([True, True, False, False])}
    results, _, _ = evaluate(folds, TRIALS, LAB, PLAIN, HEAD, unseen)
    assert results["ensemble"]["val_accuracy"] == 1.0


def test_images_no_trained_fold_held_out_are_left_out_of_the_ensemble_accuracy():
    unseen = {"fold0": np.array([True, False, False, False])}  # folds.train: [0]; the others were trained on
    results, _, _ = evaluate([fold("fold0", RIGHT, EMB)], TRIALS, LAB, PLAIN, HEAD, unseen)
    assert results["ensemble"]["val_accuracy"] == pytest.approx(1.0)
    wrong_elsewhere = RIGHT.copy()
    wrong_elsewhere[1:] = WRONG[1:]
    results, _, _ = evaluate([fold("fold0", wrong_elsewhere, EMB)], TRIALS, LAB, PLAIN, HEAD, unseen)
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
    p = ScoreParams(query_expansion=2, ensemble="mean_score", whiten=False)
    _, scores, _ = evaluate(folds, trials, LAB, p, HEAD)
    np.testing.assert_allclose(scores["ensemble"], combined_scores(folds, "val_verification", trials, p), rtol=1e-6)
    assert not np.allclose(
        scores["ensemble"],
        combined_scores(folds, "val_verification", trials, p.model_copy(update={"ensemble": "mean_embedding"})),
    )


def unit(*rows: list[float]) -> np.ndarray:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Two training images at the two classes' directions; four validation classification images (LAB: labels 0 1 0 1,
# folds 0 1 0 1). Image 0 (identity a) lies nearer b's direction; images 1-3 lie on their own class's direction.
TRAIN_EMB = unit([1, 0], [0, 1])
VAL_EMB = unit([0.6, 0.8], [0, 1], [1, 0], [0, 1])


def prototype_fold(name: str) -> FoldEmbeddings:
    return fold(
        name,
        WRONG,  # the head is wrong everywhere: what is right comes from the prototypes
        EMB,
        train_embeddings=TRAIN_EMB,
        val_classification_embeddings=VAL_EMB,
        test_classification_embeddings=unit([0.1, 1.0]),
        test_classification_probs=np.array([[0.9, 0.1]], dtype=np.float32),
        test_verification_embeddings=EMB,
    )


def test_prototypes_classify_by_the_nearest_class_mean_of_the_other_labelled_images():
    unseen = {"fold0": LAB.fold_ids == 0, "fold1": LAB.fold_ids == 1}
    folds = [prototype_fold("fold0"), prototype_fold("fold1")]
    results, _, probs = evaluate(folds, TRIALS, LAB, PLAIN, ClassifyParams(method="prototype", balance=False), unseen)
    # Image 0 is nearer b. Were it in a's prototype (its own label), it would pull a towards itself and be "right":
    # the prototypes of fold 0 hold the training images and fold 1's validation images only.
    assert probs.argmax(axis=1).tolist() == [1, 1, 0, 1]
    assert results["fold0"]["val_accuracy"] == 0.5 and results["fold1"]["val_accuracy"] == 1.0
    assert results["ensemble"]["val_accuracy"] == 0.75
    head, _, _ = evaluate(folds, TRIALS, LAB, PLAIN, HEAD, unseen)
    assert head["ensemble"]["val_accuracy"] == 0.0


def test_mixed_weighs_the_prototype_and_the_head():
    folds = [prototype_fold("fold0")]
    unseen = {"fold0": np.ones(4, dtype=bool)}
    mostly_head = ClassifyParams(method="mixed", prototype_weight=0.2, temperature=0.01, balance=False)
    mostly_proto = ClassifyParams(method="mixed", prototype_weight=0.8, temperature=0.01, balance=False)
    assert evaluate(folds, TRIALS, LAB, PLAIN, mostly_head, unseen)[0]["ensemble"]["val_accuracy"] == 0.0
    assert evaluate(folds, TRIALS, LAB, PLAIN, mostly_proto, unseen)[0]["ensemble"]["val_accuracy"] == 0.75


def test_test_predictions_use_every_labelled_image_as_prototypes():
    folds = [prototype_fold("fold0"), prototype_fold("fold1")]
    test_trials = TRIALS.drop(columns="label")
    _, head, _ = ensemble.test_predictions(folds, test_trials, LAB, PLAIN, HEAD)
    _, proto, _ = ensemble.test_predictions(
        folds, test_trials, LAB, PLAIN, ClassifyParams(method="prototype", balance=False)
    )
    assert head == ["a"] and proto == ["b"]


def test_a_prototype_method_on_embeddings_without_classification_embeddings_asks_for_embed():
    with pytest.raises(ValueError, match="re-run its embed stage"):
        evaluate([fold("fold0", RIGHT, EMB)], TRIALS, LAB, PLAIN, ClassifyParams(method="prototype", balance=False))


def test_trial_table_has_a_row_per_trial_and_a_column_per_model():
    scores = {"fold0": np.array([0.5, 0.1]), "fold1": np.array([0.4, 0.2]), "ensemble": np.array([1.0, -1.0])}
    table = trial_table(TRIALS, scores)
    assert table.columns.tolist() == ["trial", "a", "b", "label", "ensemble", "fold0", "fold1"]
    assert table["trial"].tolist() == [1, 2] and table["ensemble"].tolist() == [1.0, -1.0]


def test_prediction_table_lists_the_images_some_fold_held_out():
    probs = np.array([[0.7, 0.3], [0.0, 0.0], [0.2, 0.8], [0.1, 0.9]], dtype=np.float32)  # image 1: no fold
    table = prediction_table(LAB, probs)
    assert table["path"].tolist() == ["v0.jpg", "v2.jpg", "v3.jpg"]
    assert table["identity"].tolist() == ["a", "a", "b"] and table["predicted"].tolist() == ["a", "b", "b"]
    assert table["confidence"].tolist() == pytest.approx([0.7, 0.8, 0.9])


def test_whitening_is_fitted_per_fold_on_its_labelled_images_and_shared_by_both_splits():
    from pipeline.ensemble import Whitenings, combined_scores
    from pipeline.scoring import verification_scores, within_class_whitening

    rng = np.random.default_rng(5)

    def white_fold(name: str) -> FoldEmbeddings:
        return fold(
            name,
            RIGHT,
            rng.normal(size=(8, 4)).astype(np.float32),
            train_embeddings=rng.normal(size=(2, 4)).astype(np.float32),
            val_classification_embeddings=rng.normal(size=(4, 4)).astype(np.float32),
            test_verification_embeddings=rng.normal(size=(8, 4)).astype(np.float32),
            test_classification_embeddings=rng.normal(size=(1, 4)).astype(np.float32),
            test_classification_probs=np.array([[0.9, 0.1]], dtype=np.float32),
        )

    folds = [white_fold("fold0"), white_fold("fold1")]
    trials = pd.DataFrame({"a": ["0.jpg", "2.jpg", "4.jpg"], "b": ["1.jpg", "3.jpg", "7.jpg"], "label": [1, 0, 1]})
    p = ScoreParams(whiten=True, whiten_shrinkage=0.2, query_expansion=2)
    labels = np.concatenate([LAB.train_labels, LAB.val_labels])
    whitenings = Whitenings(folds, LAB, p)
    _, scores, _ = evaluate(folds, trials, LAB, p, HEAD, whitenings=whitenings)
    for f in folds:
        labelled = np.concatenate([f.embeddings("train"), f.embeddings("val_classification")])
        white = within_class_whitening(labelled, labels, 0.2)
        expected = verification_scores(
            f.embeddings("val_verification"), f.names("val_verification"), trials, **p.scoring_args(), whitening=white
        )
        np.testing.assert_allclose(scores[f.name], expected, rtol=1e-5)
        plain = verification_scores(
            f.embeddings("val_verification"), f.names("val_verification"), trials, **p.scoring_args()
        )
        assert not np.allclose(scores[f.name], plain)  # the knob changes the scores
    ensemble.test_predictions(folds, trials.drop(columns="label"), LAB, p, HEAD, whitenings)
    assert sorted(whitenings.fitted) == ["fold0", "fold1"]  # fitted once each for validation and test
    with pytest.raises(ValueError, match="needs the Whitenings"):
        combined_scores(folds, "val_verification", trials, p)
    # mean_embedding: one matrix from the folds' mean embeddings of the labelled images
    pm = p.model_copy(update={"ensemble": "mean_embedding"})
    mean_white = Whitenings(folds, LAB, pm)
    got = combined_scores(folds, "test_verification", trials, pm, whitenings=mean_white)
    mean = lambda split: ensemble.mean_embeddings(folds, split)  # noqa: E731
    white = within_class_whitening(np.concatenate([mean("train"), mean("val_classification")]), labels, 0.2)
    expected = verification_scores(
        mean("test_verification"), folds[0].names("test_verification"), trials, **pm.scoring_args(), whitening=white
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert Whitenings(folds, LAB, PLAIN).of(folds[0]) is None  # score.whiten: false turns it off
    assert ScoreParams().whiten  # on by default (README: Real faces, 3 seeds x 2 sets)
