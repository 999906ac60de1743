import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import trial_files
from pipeline.trial_files import (
    OrderFileError,
    TrialFileError,
    check_trial_images,
    classification_ids,
    read_order,
    read_trials,
)

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
        fast = trial_files._fast_parse(body, 2, labelled)
        try:
            trial_files._scan(Path("t"), body, 2, labelled, TrialFileError, "form")
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


def test_only_the_frame_read_trials_returned_is_marked_checked(tmp_path: Path) -> None:
    trials = read_trials(write(tmp_path / "t.txt", GOOD), labelled=False)
    assert trial_files.checked_trials(trials)
    for derived in (trials.copy(), trials.iloc[:2], pd.concat([trials, trials]), trials[["trial"]], trials["trial"]):
        assert not trial_files.checked_trials(derived)
    assert not trial_files.checked_trials(trials["trial"].tolist())
    trials["trial"] = trials["trial"].str.upper()
    assert not trial_files.checked_trials(trials)


# --- order file ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    names=st.lists(
        st.text("abcXYZ019_-.", min_size=1, max_size=8).map(lambda s: s + ".jpg"), min_size=1, max_size=20, unique=True
    ),
    crlf=st.booleans(),
)
def test_read_order_round_trip(names: list[str], crlf: bool) -> None:
    text = "\ufeff" + ("\r\n" if crlf else "\n").join(names) + "\n\n"
    with tempfile.TemporaryDirectory() as tmp:
        assert read_order(write(Path(tmp) / "order.txt", text)) == names


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1.jpg\n\n2.jpg\n", 2, "blank line"),
        ("1.jpg\n2.jpg\n1.jpg\n", 3, "duplicate entry '1.jpg', first on line 1"),
        ("1.jpg\n/abs/2.jpg\n", 2, "absolute path"),
        ("1.jpg\n../2.jpg\n", 2, r"'\.\.'"),
        ("1.jpg\n2.jpg 3.jpg\n", 2, "expected 1 field"),
    ],
)
def test_bad_order_files_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "order.txt", text)
    with pytest.raises(OrderFileError, match=message) as err:
        read_order(path)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_empty_order_file(tmp_path: Path) -> None:
    with pytest.raises(OrderFileError, match="empty file"):
        read_order(write(tmp_path / "order.txt", "\n"))


def test_classification_ids() -> None:
    assert classification_ids(["12.jpg", "3.jpeg", "x/7.jpg", "noext"]) == ["12", "3", "x/7", "noext"]
    assert classification_ids(["12.jpg"], mode="name") == ["12.jpg"]
    with pytest.raises(OrderFileError, match="'1.jpg' and '1.png' both give the id '1'"):
        classification_ids(["1.jpg", "1.png"])
