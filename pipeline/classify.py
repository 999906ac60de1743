"""Class probabilities of classification images from a fold's embeddings: the softmax head's, the nearest class
prototype's (cosine to the mean embedding of each identity's labelled images), or a mix of the two, with two
optional transductive steps over the images classified together (no label of theirs read): a refinement of the
prototypes by the images they claim, and a balancing of the probabilities so every identity claims an equal share.

What `classify.*` params set. Only the ensemble stage imports this module, so an edit here never retrains a fold.
Written by hand: neither scikit-learn's NearestCentroid (no cosine, no probabilities) nor pytorch-metric-learning
(losses and miners only) classifies by prototypes with probabilities that the fold ensemble can average; the
balancing is a few lines of Sinkhorn iterations (Cuturi 2013), not worth a dependency.
"""

from __future__ import annotations

import numpy as np

from pipeline.params import ClassifyParams
from pipeline.scoring import normalise


def class_prototypes(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, d) unit-length mean embedding of each class's rows; a class without rows gets a zero row, which
    no image is nearer to than to a class with rows."""
    sums = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, embeddings.astype(np.float64))
    return normalise(sums).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prototype_probs(
    queries: np.ndarray, prototypes: np.ndarray, temperature: float, refine_steps: int = 0
) -> np.ndarray:
    """Softmax over classes of cosine(query, prototype) / temperature.

    With `refine_steps` > 0, each step moves every prototype towards the queries it now claims: the new prototype is
    the normalised sum of the labelled prototype (weight 1) and the queries weighted by their probability of that
    class, as query expansion moves a trial image towards its neighbours. It reads no label of the queries.
    """
    q = normalise(queries.astype(np.float32))
    anchors = prototypes.astype(np.float32)
    probs = softmax(q @ anchors.T / temperature)
    for _ in range(refine_steps):
        refined = normalise(anchors + probs.T @ q)
        probs = softmax(q @ refined.T / temperature)
    return probs.astype(np.float32)


def balanced(probs: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Sinkhorn scaling of (images, classes) probabilities: each row still sums to 1 and each class's column sums
    to images / classes, the share it would hold if every identity had as many of these images. An image whose
    favourite identity is claimed more confidently by others moves to its next best."""
    q = probs.astype(np.float64) + 1e-30  # no column or row of zeros to divide by
    share = q.shape[0] / q.shape[1]
    for _ in range(iterations):
        q *= share / q.sum(axis=0, keepdims=True)
        q /= q.sum(axis=1, keepdims=True)
    return q.astype(np.float32)


def balance_applies(p: ClassifyParams, val_labels: np.ndarray, n_classes: int) -> bool:
    """`classify.balance`, with auto resolved: on when every identity has the same number of validation
    classification images."""
    if p.balance != "auto":
        return p.balance
    counts = np.bincount(val_labels, minlength=n_classes)
    return bool(len(val_labels)) and bool((counts == counts[0]).all())


def class_probs(
    head_probs: np.ndarray,
    queries: np.ndarray | None,
    labelled: np.ndarray | None,
    labelled_classes: np.ndarray,
    p: ClassifyParams,
) -> np.ndarray:
    """`classify.method`'s probabilities of the query images: `head` (the softmax head), `prototype` (nearest class
    mean of the `labelled` embeddings), or `mixed` (`classify.prototype_weight` of the prototype's plus the rest of
    the head's). `queries` and `labelled` are embeddings; `head` reads neither."""
    if p.method == "head":
        return head_probs
    protos = class_prototypes(labelled, labelled_classes, head_probs.shape[1])
    proto = prototype_probs(queries, protos, p.temperature, p.refine_steps)
    if p.method == "prototype":
        return proto
    w = p.prototype_weight
    return (w * proto + (1.0 - w) * head_probs).astype(np.float32)
