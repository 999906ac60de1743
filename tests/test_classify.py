"""Class prototypes, their probabilities, the transductive refinement and the head/prototype mix."""

import numpy as np
import pytest

from pipeline.classify import class_probs, class_prototypes, prototype_probs
from pipeline.params import ClassifyParams


def test_prototypes_are_unit_class_means_and_empty_classes_are_zero():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    protos = class_prototypes(emb, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(protos, [[2**-0.5, 2**-0.5], [0.0, 1.0], [0.0, 0.0]], atol=1e-6)


def test_probabilities_sum_to_one_and_sharpen_with_a_lower_temperature():
    protos = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    q = np.array([[0.8, 0.6]], dtype=np.float32)
    warm, cold = prototype_probs(q, protos, 1.0), prototype_probs(q, protos, 0.05)
    np.testing.assert_allclose(warm.sum(axis=1), 1.0, rtol=1e-6)
    assert warm[0, 0] > 0.5 and cold[0, 0] > warm[0, 0] > 0.5


def test_refinement_moves_prototypes_towards_the_queries_they_claim():
    # Class 0's labelled prototype points off its queries' cluster; the cluster's far edge is nearer class 1 at
    # first. Moving each prototype towards the queries it claims brings it back to class 0.
    protos = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    angles = np.radians([20, 25, 30, 35, 40, 46])
    q = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    before = prototype_probs(q, protos, 0.02).argmax(axis=1)
    after = prototype_probs(q, protos, 0.02, refine_steps=3).argmax(axis=1)
    assert before.tolist() == [0, 0, 0, 0, 0, 1] and after.tolist() == [0] * 6


def test_mixed_is_the_weighted_mean_of_head_and_prototype():
    head = np.array([[0.9, 0.1]], dtype=np.float32)
    q = np.array([[0.0, 1.0]], dtype=np.float32)
    labelled, labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), np.array([0, 1])
    proto = class_probs(head, q, labelled, labels, ClassifyParams(method="prototype", temperature=1.0))
    mixed = class_probs(
        head, q, labelled, labels, ClassifyParams(method="mixed", prototype_weight=0.25, temperature=1.0)
    )
    np.testing.assert_allclose(mixed, 0.25 * proto + 0.75 * head, rtol=1e-6)
    assert class_probs(head, None, None, labels, ClassifyParams(method="head")) is head


@pytest.mark.parametrize("key,value", [("method", "knn"), ("temperature", 0.0), ("prototype_weight", 1.5)])
def test_impossible_classify_params_are_errors_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        ClassifyParams(**{key: value})


def test_balancing_gives_each_identity_an_equal_share_and_moves_the_less_sure_image():
    from pipeline.classify import balanced

    # Both images prefer identity 0; image 1 less surely, so balancing gives it its second choice.
    probs = np.array([[0.9, 0.1], [0.6, 0.4]], dtype=np.float32)
    q = balanced(probs)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q.sum(axis=0), 1.0, rtol=1e-3)
    assert q.argmax(axis=1).tolist() == [0, 1]


def test_balance_auto_applies_when_every_identity_has_as_many_validation_images():
    from pipeline.classify import balance_applies

    auto = ClassifyParams(balance="auto")
    assert balance_applies(auto, np.array([0, 0, 1, 1]), 2)
    assert not balance_applies(auto, np.array([0, 0, 1]), 2)
    assert not balance_applies(auto, np.array([0, 0, 1, 1]), 3)  # an identity without validation images
    assert balance_applies(ClassifyParams(balance=True), np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="balance"):
        ClassifyParams(balance="yes")
