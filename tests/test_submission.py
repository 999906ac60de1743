import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from pipeline.submission import (
    SubmissionError,
    score_classification,
    score_verification,
    validate_classification,
    validate_verification,
    verification_labels_scores,
    write_classification,
    write_verification,
)
from pipeline.trial_files import read_trials

CLS = ("id", "label")
VER = ("trial", "score")
IDS = ["0", "1", "2", "3"]
IDENTITIES = {"n001", "n002", "n010"}
TRIALS = ["a.jpg b.jpg", "a.jpg c.jpg", "b.jpg c.jpg"]

safe = st.text("abcXYZ019_-.", min_size=1, max_size=8)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- writers --------------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(st.tuples(safe, safe), min_size=1, max_size=30, unique_by=lambda r: r[0]),
    header=st.sampled_from([("id", "label"), ("Id", "Category")]),
)
def test_classification_round_trip(rows: list[tuple[str, str]], header: tuple[str, str]) -> None:
    ids, labels = [r[0] for r in rows], [r[1] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classification.csv"
        write_classification(path, ids, labels, header, identities=set(labels))
        frame = validate_classification(path, ids, header, identities=set(labels))
        text = path.read_bytes()
    assert frame[header[0]].tolist() == ids
    assert frame[header[1]].tolist() == labels
    assert text.startswith(f"{header[0]},{header[1]}\n".encode()) and b"\r" not in text


def test_classification_fields_that_need_quoting_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    write_classification(path, ["1", "2"], ['Smith, "J"', "plain"], CLS)
    assert validate_classification(path, ["1", "2"], CLS)["label"].tolist() == ['Smith, "J"', "plain"]


@settings(max_examples=50, deadline=None)
@given(
    trials=st.lists(st.tuples(safe, safe).map(" ".join), min_size=1, max_size=30, unique=True),
    data=st.data(),
    double=st.booleans(),
)
def test_verification_round_trip_keeps_exact_scores(trials: list[str], data, double: bool) -> None:
    dtype = np.float64 if double else np.float32
    width = 64 if double else 32
    floats = st.floats(allow_nan=False, allow_infinity=False, width=width)
    scores = np.array(data.draw(st.lists(floats, min_size=len(trials), max_size=len(trials))), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "verification.csv"
        write_verification(path, trials, scores, VER)
        frame = validate_verification(path, trials, VER)
    assert frame["trial"].tolist() == trials
    assert np.array_equal(frame["score"].to_numpy().astype(dtype), scores)  # same values, so the same ranking


def test_write_verification_takes_a_trial_frame(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", "\n".join(TRIALS) + "\n"), labelled=False)
    path = tmp_path / "v.csv"
    write_verification(path, trials, np.array([0.5, -0.25, 1.0], dtype=np.float32), VER)
    assert path.read_text() == "trial,score\na.jpg b.jpg,0.5\na.jpg c.jpg,-0.25\nb.jpg c.jpg,1\n"


@pytest.mark.parametrize(
    ("ids", "labels", "message"),
    [
        (IDS[:2], np.array([3, 7]), "class indices"),
        (IDS[:2], [3, 7], "class indices"),
        (IDS[:2], ["3", "n001"], r":2: label '3' is not a known identity name; a class index\?"),
        (IDS[:2], ["n001", "banana"], r":3: label 'banana' is not a known identity name$"),
        (IDS[:2], ["n001", ""], ":3: empty label"),
        (["0", "0"], ["n001", "n002"], ":3: duplicate id '0', first on line 2"),
        (IDS[:2], ["n001"], "2 ids but 1 labels"),
        ([0, 1], ["n001", "n002"], "ids must be strings"),
    ],
)
def test_write_classification_refuses(tmp_path: Path, ids, labels, message: str) -> None:
    path = tmp_path / "c.csv"
    with pytest.raises(SubmissionError, match=message):
        write_classification(path, ids, labels, CLS, identities=IDENTITIES)
    assert not path.exists()


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ([0.1, np.nan, 0.3], r":3: score 'nan' is not a finite number"),
        ([0.1, 0.2, np.inf], r":4: score 'inf' is not a finite number"),
        ([0.1, 0.2], r"3 trials but scores of shape \(2,\)"),
        (["a", "b", "c"], "must be numbers"),
    ],
)
def test_write_verification_refuses(tmp_path: Path, scores, message: str) -> None:
    path = tmp_path / "v.csv"
    with pytest.raises(SubmissionError, match=message):
        write_verification(path, TRIALS, np.array(scores), VER)
    assert not path.exists()


# --- validators -----------------------------------------------------------------------------------------------

GOOD_CLS = "id,label\n0,n001\n1,n002\n2,n010\n3,n001\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("Id,Category\n0,n001\n1,n002\n2,n010\n3,n001\n", 1, "header is 'Id,Category', expected 'id,label'"),
        (",id,label\n0,0,n001\n", 1, "index column"),
        ("0,n001\n1,n002\n2,n010\n3,n001\n", 1, "header is '0,n001'"),
        ("", 1, "empty file"),
        ("id,label\n0,n001\n1,n002\n2,n010\n", 5, "ends after 3 rows, but the order file has 4 .*'3'"),
        ("id,label\n0,n001\n1,n002\n2,n010\n3,n001\n4,n001\n", 6, "extra rows: 5 rows"),
        ("id,label\n0,n001\n2,n010\n1,n002\n3,n001\n", 3, "'2' is out of order: the order file wants '1' here"),
        ("id,label\n0,n001\n1,n002\n9,n010\n3,n001\n", 4, "'9' is not in the order file"),
        ("id,label\n0,n001\n1,n002\n1,n010\n3,n001\n", 4, "duplicate id '1', first on line 3"),
        ("id,label\n0,n001\n1,2\n2,n010\n3,n001\n", 3, "label '2' is not a known identity name; a class index"),
        ("id,label\n0,n001\n1,\n2,n010\n3,n001\n", 3, "empty label"),
        ("id,label\n0,n001\n1\n2,n010\n3,n001\n", 3, "empty label"),
        ("id,label\n0,n001\n\n1,n002\n2,n010\n3,n001\n", 3, "blank line"),
        ("id,label\n0,n001\n1,n002,x\n2,n010\n3,n001\n", 3, "expected 2 fields, found 3"),
        ("id,label\n0,n001,x\n1,n002\n2,n010\n3,n001\n", 2, "expected 2 fields, found 3"),
        ("id,label\n0,n001\n1,bad\n2,n010,x\n3,n001\n", 3, "'bad' is not a known identity"),  # earlier wins
        ("id,label\n0,n001\n1,n002\n2,n010\n3,n001\n", None, None),
        ("\ufeffid,label\r\n0,n001\r\n1,n002\r\n2,n010\r\n3,n001\r\n\r\n\r\n", None, None),
    ],
)
def test_validate_classification(tmp_path: Path, text: str, line: int | None, message: str | None) -> None:
    path = write(tmp_path / "classification.csv", text)
    if line is None:
        assert len(validate_classification(path, IDS, CLS, IDENTITIES)) == 4
        return
    with pytest.raises(SubmissionError, match=message) as err:
        validate_classification(path, IDS, CLS, IDENTITIES)
    assert str(err.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,0.2\n", 4, "ends after 2 rows"),
        ("trial,score\na.jpg c.jpg,0.1\na.jpg b.jpg,0.2\nb.jpg c.jpg,0.3\n", 2, "out of order"),
        ("trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,NaN\nb.jpg c.jpg,0.3\n", 3, "'NaN' is not a finite number"),
        ("trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,0.2\nb.jpg c.jpg,-inf\n", 4, "'-inf' is not a finite"),
        ("trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,high\nb.jpg c.jpg,0.3\n", 3, "'high' is not a finite number"),
        ("trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,\nb.jpg c.jpg,0.3\n", 3, "empty score"),
        ("trial,score\na.jpg b.jpg,0.1\na.jpg b.jpg,0.2\nb.jpg c.jpg,0.3\n", 3, "duplicate trial 'a.jpg b.jpg'"),
        ("trial,label\na.jpg b.jpg,0.1\na.jpg c.jpg,0.2\nb.jpg c.jpg,0.3\n", 1, "header"),
        ("trial,score\na.jpg b.jpg,1e-3\na.jpg c.jpg,-2\nb.jpg c.jpg,3.5E+2\n", None, None),
    ],
)
def test_validate_verification(tmp_path: Path, text: str, line: int | None, message: str | None) -> None:
    path = write(tmp_path / "verification.csv", text)
    if line is None:
        assert validate_verification(path, TRIALS, VER)["score"].tolist() == [1e-3, -2.0, 350.0]
        return
    with pytest.raises(SubmissionError, match=message) as err:
        validate_verification(path, TRIALS, VER)
    assert str(err.value).startswith(f"{path}:{line}: ")


# --- local scorer -----------------------------------------------------------------------------------------------


def test_score_classification(tmp_path: Path) -> None:
    solution = write(tmp_path / "sol.csv", "id,label\n0,n001\n1,n002\n2,n010\n3,n001\n")
    sub = write(tmp_path / "sub.csv", "Id,Category\n0,n001\n1,n002\n2,n002\n3,n001\n")
    header = ("Id", "Category")
    assert score_classification(sub, solution, header) == 0.75
    assert score_classification(sub, solution, header, rows=np.array([2, 3])) == 0.5
    assert score_classification(sub, solution, header, rows=np.array([True, True, False, False])) == 1.0
    with pytest.raises(ValueError, match="row mask"):
        score_classification(sub, solution, header, rows=np.array([True]))
    bad = write(tmp_path / "bad.csv", "Id,Category\n0,n001\n1,n002\n3,n001\n2,n002\n")
    with pytest.raises(SubmissionError, match=r"bad\.csv:4: Id '3' is out of order: the solution .*sol\.csv"):
        score_classification(bad, solution, header)


def test_score_verification_matches_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    trials = [f"{i}.jpg {i + 1}.jpg" for i in range(200)]
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1).astype(np.float32)  # rounded: ties must count half
    solution = tmp_path / "sol.csv"
    solution.write_text("trial,label\n" + "".join(f"{t},{y}\n" for t, y in zip(trials, labels, strict=True)))
    sub = tmp_path / "sub.csv"
    write_verification(sub, trials, scores, VER)
    assert score_verification(sub, solution, VER) == roc_auc_score(labels, scores)
    public = np.arange(200) % 3 == 0
    assert score_verification(sub, solution, VER, rows=public) == roc_auc_score(labels[public], scores[public])
    got_labels, got_scores = verification_labels_scores(sub, solution, VER)
    assert got_labels.tolist() == labels.tolist() and np.array_equal(got_scores.astype(np.float32), scores)


def test_score_verification_refuses_a_bad_solution(tmp_path: Path) -> None:
    solution = write(tmp_path / "sol.csv", "trial,label\na.jpg b.jpg,1\na.jpg c.jpg,2\nb.jpg c.jpg,0\n")
    sub = write(tmp_path / "sub.csv", "trial,score\na.jpg b.jpg,0.1\na.jpg c.jpg,0.2\nb.jpg c.jpg,0.3\n")
    with pytest.raises(SubmissionError, match=r"sol\.csv:3: label must be 0 or 1, got '2'"):
        score_verification(sub, solution, VER)


def test_write_verification_rechecks_frames_derived_from_read_trials(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", "\n".join(TRIALS) + "\n"), labelled=False)
    doubled = pd.concat([trials, trials], ignore_index=True)
    with pytest.raises(SubmissionError, match=":5: duplicate trial 'a.jpg b.jpg', first on line 2"):
        write_verification(tmp_path / "v.csv", doubled, np.zeros(6, dtype=np.float32), VER)
    edited = trials.copy()
    edited.loc[1, "trial"] = ""
    with pytest.raises(SubmissionError, match=":3: empty trial"):
        write_verification(tmp_path / "v.csv", edited, np.zeros(3, dtype=np.float32), VER)
    with pytest.raises(SubmissionError, match=r":3: score 'nan' is not a finite number"):
        write_verification(tmp_path / "v.csv", trials, np.array([0.0, np.nan, 1.0]), VER)
    assert not (tmp_path / "v.csv").exists()


def test_write_verification_refuses_non_string_trials(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="trials must be strings"):
        write_verification(tmp_path / "v.csv", [1, 2], np.zeros(2), VER)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_write_verification_formats_like_per_value_formatting(tmp_path: Path, dtype) -> None:
    rng = np.random.default_rng(0)
    scores = (rng.normal(size=500) * 10.0 ** rng.integers(-8, 8, size=500)).astype(dtype)
    scores[:4] = [0, 1, -1, 2] if dtype == np.int64 else [0.0, -0.0, 1e-5, 123456789.0]
    trials = [f"{i}.jpg {i + 1}.jpg" for i in range(500)]
    write_verification(tmp_path / "v.csv", trials, scores, VER)
    spec = "%.9g" if dtype == np.float32 else "%r"
    want = "".join(f"{t},{spec % float(s)}\n" for t, s in zip(trials, scores.tolist(), strict=True))
    assert (tmp_path / "v.csv").read_text() == "trial,score\n" + want


def test_write_verification_quotes_trials_that_need_it(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", 'a,1.jpg b.jpg\n"q".jpg b.jpg\n'), labelled=False)
    write_verification(tmp_path / "v.csv", trials, np.array([0.5, 0.25], dtype=np.float32), VER)
    frame = validate_verification(tmp_path / "v.csv", trials, VER)
    assert frame["trial"].tolist() == ["a,1.jpg b.jpg", '"q".jpg b.jpg'] and frame["score"].tolist() == [0.5, 0.25]
