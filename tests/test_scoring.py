from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

from pipeline import scoring
from pipeline.scoring import trial_scores
from pipeline.trial_files import read_trials

safe_name = (
    st.text("abcXYZ019_-.", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")).map(lambda s: s + ".jpg")
)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def naive_scores(emb: np.ndarray, ids: list[str], trials: pd.DataFrame, metric: str) -> np.ndarray:
    row = {name: i for i, name in enumerate(ids)}
    out = []
    for a, b in zip(trials["a"], trials["b"], strict=True):
        x, y = emb[row[a]].astype(np.float64), emb[row[b]].astype(np.float64)
        if metric == "cosine":
            out.append(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
        else:
            out.append(-np.linalg.norm(x - y))
    return np.array(out)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_trial_scores_match_naive_reference(metric: str, chunk: int) -> None:
    rng = np.random.default_rng(0)
    ids = [f"{i}.jpg" for i in rng.permutation(40)]
    emb = (rng.normal(size=(40, 16)) * rng.uniform(0.1, 5, size=(40, 1))).astype(np.float32)
    trials = pd.DataFrame({"a": rng.choice(ids, 100), "b": rng.choice(ids, 100)})
    got = trial_scores(emb, ids, trials, metric=metric, chunk=chunk)
    assert got.dtype == np.float32 and got.shape == (100,)
    np.testing.assert_allclose(got, naive_scores(emb, ids, trials, metric), rtol=1e-5, atol=1e-5)


def test_trial_scores_errors(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", "a.jpg b.jpg\nb.jpg q.jpg\nq.jpg r.jpg\n"), False)
    emb = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"t\.txt:2: no embedding for 'q\.jpg' \(2 trial"):
        trial_scores(emb, ["a.jpg", "b.jpg"], trials)
    with pytest.raises(ValueError, match="not unique"):
        trial_scores(emb, ["a.jpg", "a.jpg"], trials)
    with pytest.raises(ValueError, match="2 embedding rows but 3 ids"):
        trial_scores(emb, ["a.jpg", "b.jpg", "q.jpg"], trials)
    with pytest.raises(ValueError, match="NaN"):
        trial_scores(np.array([[np.nan, 0], [0, 1]]), ["a.jpg", "b.jpg"], trials.iloc[:1])
    with pytest.raises(ValueError, match="unknown metric"):
        trial_scores(emb, ["a.jpg", "b.jpg"], trials.iloc[:1], metric="dot")


def test_normalise() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = scoring.normalise(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_trial_columns_share_categories_and_score_like_plain_strings(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", "a.jpg b.jpg 1\nb.jpg c.jpg 0\nc.jpg a.jpg 1\n"), labelled=True)
    assert trials["a"].dtype == trials["b"].dtype == "category"
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    ids = ["c.jpg", "z.jpg", "a.jpg", "b.jpg"]
    plain = trials.assign(a=trials["a"].astype(object), b=trials["b"].astype(object))
    np.testing.assert_array_equal(trial_scores(emb, ids, trials), trial_scores(emb, ids, plain))


def qe_reference(emb: np.ndarray, k: int, alpha: float, unit: bool) -> np.ndarray:
    """alpha-QE written out one image at a time: the weighted mean of the image and its k most similar others."""
    units = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    base = units if unit else emb
    out = []
    for i in range(len(emb)):
        sims = units @ units[i]
        sims[i] = -np.inf
        nearest = np.argsort(-sims)[: min(k, len(emb) - 1)]
        w = np.clip(sims[nearest], 0, None) ** alpha
        out.append((base[i] + w @ base[nearest]) / (1 + w.sum()))
    return np.array(out)


@pytest.mark.parametrize(
    ("k", "alpha", "unit", "chunk"), [(1, 1.0, True, 1024), (3, 3.0, True, 2), (5, 1.0, False, 3), (50, 0.0, True, 7)]
)
def test_query_expansion_matches_its_formula(k, alpha, unit, chunk) -> None:
    emb = np.random.default_rng(k).normal(size=(11, 6)).astype(np.float32)
    got = scoring.query_expansion(emb, k, alpha, unit=unit, chunk=chunk)
    np.testing.assert_allclose(got, qe_reference(emb.astype(np.float64), k, alpha, unit), rtol=1e-4, atol=1e-6)


def test_query_expansion_pulls_photos_of_one_face_together() -> None:
    """Noisy photos of 20 faces, 6 each: after expansion same-face pairs rank above other pairs more often."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    ident = np.repeat(np.arange(20), 6)
    emb = (centres[ident] + 1.2 * rng.normal(size=(120, 16))).astype(np.float32)
    names = [f"{i}.jpg" for i in range(120)]
    a, b = np.triu_indices(120, 1)
    trials = pd.DataFrame({"a": [names[i] for i in a], "b": [names[j] for j in b]})
    same = (ident[a] == ident[b]).astype(int)
    from sklearn.metrics import roc_auc_score

    plain = roc_auc_score(same, scoring.verification_scores(emb, names, trials, "euclidean"))
    expanded = roc_auc_score(same, scoring.verification_scores(emb, names, trials, "euclidean", expand=5, alpha=1))
    assert expanded > plain + 0.02, (plain, expanded)


def test_query_expansion_edge_cases() -> None:
    one = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(scoring.query_expansion(one, 5, 1.0), [[0.6, 0.8]])  # no other image: itself
    np.testing.assert_allclose(scoring.query_expansion(one, 5, 1.0, unit=False), one)
    with pytest.raises(ValueError, match="NaN or infinite"):
        scoring.query_expansion(np.array([[1.0, np.nan], [1.0, 0.0]]), 1, 1.0)
    with pytest.raises(ValueError, match="2-D"):
        scoring.query_expansion(np.ones(3), 1, 1.0)


def faces(rng: np.random.Generator, identities: int, per: int, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of `per` photos of each of `identities` faces: identity centres in every direction, photo-to-photo
    variation scaled per dimension by `spread` (as pose or light moves every photo along the same few directions)."""
    labels = np.repeat(np.arange(identities), per)
    centres = rng.normal(size=(identities, len(spread)))
    return (centres[labels] + rng.normal(size=(len(labels), len(spread))) * spread).astype(np.float32), labels


def test_within_class_whitening_makes_the_labelled_scatter_isotropic() -> None:
    rng = np.random.default_rng(0)
    emb, labels = faces(rng, 30, 20, np.array([4.0, 1.0, 1.0, 0.3, 1.0, 1.0]))
    white = scoring.within_class_whitening(emb, labels, shrinkage=0.0)
    x = scoring.normalise(emb.astype(np.float64))
    means = np.stack([x[labels == c].mean(axis=0) for c in range(30)])
    residual = (x - means[labels]) @ white
    cov = residual.T @ residual / len(x)
    np.testing.assert_allclose(cov, np.eye(6), atol=1e-4)  # the scatter it was fitted on becomes the identity
    np.testing.assert_allclose(white, white.T, atol=1e-6)
    # chunked sums give the same matrix; shrinkage 1 is a multiple of the identity (no whitening)
    np.testing.assert_allclose(scoring.within_class_whitening(emb, labels, 0.0, chunk=7), white, rtol=1e-4)
    flat = scoring.within_class_whitening(emb, labels, shrinkage=1.0)
    np.testing.assert_allclose(flat / flat[0, 0], np.eye(6), atol=1e-5)
    half = scoring.within_class_whitening(emb, labels, shrinkage=0.5)
    ratio = lambda m: np.linalg.cond(m.astype(np.float64))  # noqa: E731
    assert ratio(flat) < ratio(half) < ratio(white)


def test_whitening_from_labelled_faces_separates_unseen_faces_better() -> None:
    """Fitted on labelled identities, applied to other identities' trials: the direction photos of one face vary
    most in stops counting as a difference between faces."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    spread = np.array([3.0, 3.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    train, train_labels = faces(rng, 40, 10, spread)
    test, test_labels = faces(rng, 40, 4, spread)
    names = [f"{i}.jpg" for i in range(len(test))]
    a, b = np.triu_indices(len(test), 1)
    trials = pd.DataFrame({"a": np.array(names)[a], "b": np.array(names)[b]})
    same = test_labels[a] == test_labels[b]
    white = scoring.within_class_whitening(train, train_labels, shrinkage=0.1)
    plain = roc_auc_score(same, scoring.verification_scores(test, names, trials, "euclidean"))
    whitened = roc_auc_score(same, scoring.verification_scores(test, names, trials, "euclidean", whitening=white))
    assert whitened > plain + 0.05, (plain, whitened)


def test_within_class_whitening_errors() -> None:
    emb = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="at least two labelled images"):
        scoring.within_class_whitening(emb, np.array([0, 1, 2]), 0.3)
    with pytest.raises(ValueError, match="2 labels for embeddings of shape"):
        scoring.within_class_whitening(emb, np.array([0, 0]), 0.3)
    with pytest.raises(ValueError, match="NaN"):
        scoring.within_class_whitening(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 0]), 0.3)
    # identities with one image are left out rather than counted as photos without variation
    rng = np.random.default_rng(1)
    emb, labels = faces(rng, 10, 5, np.ones(4))
    singles = rng.normal(size=(6, 4)).astype(np.float32)
    with_singles = scoring.within_class_whitening(np.concatenate([emb, singles]), np.r_[labels, 100 + np.arange(6)], 0)
    np.testing.assert_allclose(with_singles, scoring.within_class_whitening(emb, labels, 0), rtol=1e-5)
