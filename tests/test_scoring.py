import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import scoring
from pipeline.scoring import TrialFileError, check_trial_images, read_trials, trial_scores

safe_name = (
    st.text("abcXYZ019_-.", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")).map(lambda s: s + ".jpg")
)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(safe_name, safe_name), min_size=1, max_size=30, unique=True),
    labels=st.lists(st.integers(0, 1), min_size=30, max_size=30),
    labelled=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    trailing=st.sampled_from(["", "\n", "\n\n", "\n  \n"]),
)
def test_read_trials_round_trip(pairs, labels, labelled, crlf, bom, trailing) -> None:
    lines = [f"{a} {b}" + (f" {y}" if labelled else "") for (a, b), y in zip(pairs, labels, strict=False)]
    text = "\n".join(lines) + trailing
    if crlf:
        text = text.replace("\n", "\r\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "trials.txt", ("\ufeff" if bom else "") + text)
        frame = read_trials(path, labelled=labelled)
    assert frame["a"].tolist() == [a for a, _ in pairs]
    assert frame["b"].tolist() == [b for _, b in pairs]
    assert frame["trial"].tolist() == [f"{a} {b}" for a, b in pairs]
    if labelled:
        assert frame["label"].dtype == np.int8
        assert frame["label"].tolist() == labels[: len(pairs)]
    else:
        assert "label" not in frame


GOOD = "a.jpg b.jpg\nc.jpg d.jpg\ne.jpg f.jpg\n"


@pytest.mark.parametrize(
    ("text", "labelled", "line", "message"),
    [
        ("a.jpg b.jpg\n\nc.jpg d.jpg\n", False, 2, "blank line"),
        ("a.jpg b.jpg\n  \nc.jpg d.jpg\n", False, 2, "blank line"),
        ("a.jpg b.jpg\nc.jpg d.jpg 1\n", False, 2, "expected 2 field.*found 3.*validation"),
        ("a.jpg b.jpg 1\nc.jpg d.jpg\n", True, 2, "expected 3 field.*found 2.*test trial file"),
        ("a.jpg\n", False, 1, "found 1"),
        ("a.jpg b.jpg 0\nc.jpg d.jpg 2\n", True, 2, "label must be 0 or 1, got '2'"),
        ("a.jpg b.jpg 0\nc.jpg d.jpg yes\n", True, 2, "label must be 0 or 1"),
        ("a.jpg b.jpg\nc.jpg d.jpg\na.jpg b.jpg\n", False, 3, "duplicate entry 'a.jpg b.jpg', first on line 1"),
        ("a.jpg b.jpg 1\nc.jpg d.jpg 1\na.jpg b.jpg 0\n", True, 3, "duplicate.*first on line 1"),
        ("a.jpg b.jpg\n/etc/c.jpg d.jpg\n", False, 2, "absolute path '/etc/c.jpg'"),
        ("a.jpg b.jpg\nc.jpg ../d.jpg\n", False, 2, r"'\.\.' in '\.\./d\.jpg'"),
        ("a.jpg b.jpg\nc.jpg x/../../d.jpg\n", False, 2, r"'\.\.'"),
        ("a.jpg b.jpg\nc.jpg ..\n", False, 2, r"'\.\.'"),
        ("a.jpg b.jpg\nc.jpg sub\\d.jpg\n", False, 2, "backslash"),
        ("a.jpg b.jpg\nc.jpg  d.jpg\n", False, 2, "single spaces"),
        ("a.jpg b.jpg\nc.jpg d.jpg \n", False, 2, "single spaces"),
        ("a.jpg b.jpg\n c.jpg d.jpg\n", False, 2, "single spaces"),
        ("a.jpg b.jpg\nc.jpg\td.jpg\n", False, 2, "tab"),
        ("a.jpg b.jpg\nc.jpg d.jpg\re.jpg f.jpg\n", False, 2, "control character"),
        (b"a.jpg b.jpg\nc.jpg d\xff.jpg\n", False, 2, "not valid UTF-8"),
        ("a.jpg b.jpg\r\n\r\nc.jpg d.jpg\r\n", False, 2, "blank line"),
        ("\ufeffa.jpg b.jpg\r\nc.jpg d.jpg\r\nc.jpg d.jpg\r\n", False, 3, "duplicate"),
    ],
)
def test_bad_trial_files_name_the_line(tmp_path: Path, text, labelled: bool, line: int, message: str) -> None:
    path = write(tmp_path / "trials.txt", text)
    with pytest.raises(TrialFileError, match=message) as err:
        read_trials(path, labelled=labelled)
    assert str(err.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("text", ["", "\n", "\r\n\r\n", "\ufeff", "  \n\n"])
def test_empty_trial_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "trials.txt", text)
    with pytest.raises(TrialFileError, match="empty file"):
        read_trials(path, labelled=False)


def test_subfolder_names_are_allowed(tmp_path: Path) -> None:
    frame = read_trials(write(tmp_path / "t.txt", "x/a.jpg x/b.jpg\n..a.jpg b..jpg\n"), labelled=False)
    assert frame["trial"].tolist() == ["x/a.jpg x/b.jpg", "..a.jpg b..jpg"]
    assert frame.attrs["source"] == str(tmp_path / "t.txt")


line_piece = st.sampled_from(["a.jpg", "b.jpg", "c.jpg", "0", "1", "2", "", " ", "\t", "/x.jpg", "..", "d\\e.jpg"])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.lists(line_piece, min_size=0, max_size=4).map(" ".join), min_size=1, max_size=6))
def test_fast_path_agrees_with_line_scan(lines: list[str]) -> None:
    """Whatever the content, the vectorised parse accepts exactly what the line-by-line scan accepts."""
    body = "\n".join(lines).encode()
    for labelled in (False, True):
        fast = scoring._fast_parse(body, 2, labelled)
        try:
            scoring._scan(Path("t"), body, 2, labelled, TrialFileError, "form")
        except TrialFileError as err:
            scan_ok = "no bad line found" in str(err)
        assert (fast is not None) == scan_ok, (lines, labelled)
        if fast is not None:
            assert fast[0] == lines


def test_check_trial_images(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (folder / name).touch()
    trials = read_trials(write(tmp_path / "t.txt", "a.jpg b.jpg\nb.jpg c.jpg\nc.jpg x.jpg\ny.jpg x.jpg\n"), False)
    check_trial_images(trials.iloc[:2], folder)
    with pytest.raises(TrialFileError, match=r"t\.txt:3: 'x\.jpg' is not in .*2 referenced file\(s\) missing.*2 trial"):
        check_trial_images(trials, folder)
    with pytest.raises(TrialFileError, match="image folder not found"):
        check_trial_images(trials, tmp_path / "nope")


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


wide_name = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="/\\"),
    min_size=1,
    max_size=90,
).filter(lambda s: s != "..")


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(wide_name, wide_name), min_size=1, max_size=40, unique=True))
def test_names_of_any_length_and_script_factorize_like_strings(pairs) -> None:
    """Names are factorized from the file's bytes (hashed in 8-byte words, long names as strings): the codes
    and categories must be those of the names themselves."""
    with tempfile.TemporaryDirectory() as tmp:
        frame = read_trials(write(Path(tmp) / "t.txt", "\n".join(f"{a} {b}" for a, b in pairs)), labelled=False)
    assert frame["a"].tolist() == [a for a, _ in pairs] and frame["b"].tolist() == [b for _, b in pairs]
    codes, uniques = pd.factorize(np.array([name for pair in pairs for name in pair], dtype=object))
    assert list(frame["a"].cat.categories) == list(uniques)
    assert (
        frame["a"].cat.codes.tolist() == codes[0::2].tolist() and frame["b"].cat.codes.tolist() == codes[1::2].tolist()
    )


def test_names_sharing_their_first_eight_bytes_stay_apart(tmp_path: Path) -> None:
    text = "longname_0001.jpg longname_0002.jpg\nlongname_0002.jpg longname_0001.jpg\nlongname_0001.jpg x.jpg\n"
    frame = read_trials(write(tmp_path / "t.txt", text), labelled=False)
    assert list(frame["a"].cat.categories) == ["longname_0001.jpg", "longname_0002.jpg", "x.jpg"]
    with pytest.raises(TrialFileError, match=r":4: duplicate entry 'longname_0001\.jpg longname_0002\.jpg'"):
        read_trials(write(tmp_path / "d.txt", text + "longname_0001.jpg longname_0002.jpg\n"), labelled=False)


def test_trial_columns_share_categories_and_score_like_plain_strings(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", "a.jpg b.jpg 1\nb.jpg c.jpg 0\nc.jpg a.jpg 1\n"), labelled=True)
    assert trials["a"].dtype == trials["b"].dtype == "category"
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    ids = ["c.jpg", "z.jpg", "a.jpg", "b.jpg"]
    plain = trials.assign(a=trials["a"].astype(object), b=trials["b"].astype(object))
    np.testing.assert_array_equal(trial_scores(emb, ids, trials), trial_scores(emb, ids, plain))


def test_only_the_frame_read_trials_returned_is_marked_checked(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", GOOD), labelled=False)
    assert scoring.checked_trials(trials)
    for derived in (trials.copy(), trials.iloc[:2], pd.concat([trials, trials]), trials[["trial"]], trials["trial"]):
        assert not scoring.checked_trials(derived)
    assert not scoring.checked_trials(trials["trial"].tolist())
    trials["trial"] = trials["trial"].str.upper()
    assert not scoring.checked_trials(trials)


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
