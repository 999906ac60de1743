"""Trial files and the classification order file: strict, fast readers (and the trial-manifest writer).

A trial file holds lines `a.jpg b.jpg` (test) or `a.jpg b.jpg 0|1` (validation); the real test file has
900,000 lines, so parsing is vectorised over the whole file and only an invalid file is scanned line by line,
to name its first bad line. The same strict line parser reads the classification order file (`read_order`),
one image name per line, and `classification_ids` turns its names into submission ids.
"""

from __future__ import annotations

import os
import posixpath
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

_BOM = b"\xef\xbb\xbf"
_DOTDOT = r"(?:^|/)\.\.(?:/|$)"
_MAX_HASHED_NAME = 64  # bytes; longer names are factorized as strings


class TrialFileError(ValueError):
    """A trial file that cannot be used; the message reads `PATH:LINE: what is wrong`."""


CHECKED = "checked_by_read_trials"  # attrs key of the mark `checked_trials` reads


class _Checked:
    """The mark `read_trials` leaves on its frame; deep copies (how pandas passes `attrs` on) lose it."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = weakref.ref(frame)
        self.texts = weakref.ref(frame["trial"].array)  # a replaced `trial` column is not the checked one
        self.rows = len(frame)

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __repr__(self) -> str:
        return "<checked by read_trials>"


def _drop_trailing_blank_lines(raw: bytes) -> bytes:
    """The file without its final newline and without whitespace-only lines at its end."""
    end = len(raw)
    if end and raw[end - 1] == 0x0A:
        end -= 1
    while end > 0:
        start = raw.rfind(b"\n", 0, end) + 1
        if raw[start:end].strip(b" \t"):
            break
        end = max(start - 1, 0)
    return raw[:end]


def _bad_names(names: np.ndarray, has_slash: bool) -> np.ndarray:
    """Mask of names that are absolute, use backslashes or climb out of the folder with `..`."""
    if not has_slash:  # the common case: plain file names, where only a bare ".." can escape
        return names == ".."
    s = pd.Series(names, dtype=object)
    bad = s.str.startswith("/") | s.str.contains("\\", regex=False) | s.str.contains(_DOTDOT, regex=True)
    return bad.to_numpy(dtype=bool)


def _name_problem(name: str) -> str | None:
    if name.startswith("/"):
        return f"absolute path {name!r}: names must be relative to the image folder"
    if "\\" in name:
        return f"backslash in {name!r}: use '/' as the path separator"
    if ".." in name.split("/"):
        return f"'..' in {name!r}: names must stay inside the image folder"
    return None


def _scan(path: Path, body: bytes, n_names: int, labelled: bool, error: type[ValueError], form: str) -> None:
    """Line-by-line check that raises for the first bad line; only run once the fast path found a problem."""
    n_fields = n_names + int(labelled)
    seen: dict[str, int] = {}
    for number, raw_line in enumerate(body.split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise error(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        if not line.strip(" \t"):
            raise error(f"{where}: blank line inside the file (only trailing blank lines are allowed)")
        control = next((c for c in line if ord(c) < 32 or ord(c) == 127), None)
        if control == "\t":
            raise error(f"{where}: tab character; fields must be separated by single spaces ({form})")
        if control is not None:
            raise error(f"{where}: control character {control!r} in the line")
        fields = line.split(" ")
        if "" in fields:
            raise error(f"{where}: fields must be separated by single spaces, with no leading or trailing space")
        if len(fields) != n_fields:
            hint = ""
            if n_names == 2 and len(fields) == 3 and not labelled:
                hint = "; a third column is a label: is this a validation (labelled) trial file?"
            elif n_names == 2 and len(fields) == 2 and labelled:
                hint = "; labelled trial files need a 0/1 label: is this a test trial file?"
            raise error(f"{where}: expected {n_fields} field(s) ({form}), found {len(fields)}{hint}")
        if labelled and fields[-1] not in ("0", "1"):
            raise error(f"{where}: label must be 0 or 1, got {fields[-1]!r}")
        for name in fields[:n_names]:
            problem = _name_problem(name)
            if problem:
                raise error(f"{where}: {problem}")
        key = " ".join(fields[:n_names])
        if key in seen:
            raise error(f"{where}: duplicate entry {key!r}, first on line {seen[key]}")
        seen[key] = number
    raise error(f"{path}: rejected by the fast check but no bad line found (please report this)")


def read_name_table(
    path: str | Path,
    n_names: int,
    labelled: bool = False,
    error: type[ValueError] = TrialFileError,
    form: str = "a.jpg b.jpg",
) -> tuple[list[str], np.ndarray]:
    """Strictly parse a file of space-separated relative file names, optionally followed by a 0/1 label.

    Accepts a UTF-8 BOM, CRLF line endings and trailing blank lines; refuses an empty file, interior blank
    lines, wrong field counts or spacing, labels other than 0/1, absolute paths, backslashes, `..` components
    and duplicated entries (the names of a line, without its label).

    Args:
        path: The file to read.
        n_names: File-name fields per line (2 for trials, 1 for the order file).
        labelled: Whether a 0/1 label field follows the names.
        error: Exception class raised, with a `PATH:LINE: ...` message.
        form: What a line should look like, for messages.

    Returns:
        The lines (without line endings) and an object array of their fields, shape (lines, fields).
    """
    parsed = _parse(Path(path), n_names, labelled, error, form)
    return parsed[0], parsed[1]


def _parse(
    path: Path, n_names: int, labelled: bool, error: type[ValueError], form: str
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """`read_name_table`'s work, also returning the name codes and their unique names (see `_fast_parse`)."""
    raw = path.read_bytes()
    raw = raw.removeprefix(_BOM)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    body = _drop_trailing_blank_lines(raw)
    if not body:
        raise error(f"{path}: empty file: expected lines of the form {form!r}")
    parsed = _fast_parse(body, n_names, labelled)
    if parsed is not None:
        return parsed
    _scan(path, body, n_names, labelled, error, form)
    raise AssertionError("unreachable")  # _scan always raises


def _fast_parse(
    body: bytes, n_names: int, labelled: bool
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """Whole-file vectorised parse; None when anything is wrong (then `_scan` finds the first bad line).

    Returns:
        The lines, their fields (object array, lines x fields), the names as codes (int, lines x names) into
        the unique names (object array, in order of first appearance).
    """
    n_fields = n_names + int(labelled)
    arr = np.frombuffer(body, dtype=np.uint8)
    if (((arr < 0x20) & (arr != 0x0A)) | (arr == 0x7F)).any():
        return None
    newlines = np.flatnonzero(arr == 0x0A)
    if len(newlines) and (newlines[0] == 0 or (np.diff(newlines) == 1).any()):
        return None  # an empty interior line
    spaces = np.flatnonzero(arr == 0x20)
    n = len(newlines) + 1
    if not (np.bincount(np.searchsorted(newlines, spaces), minlength=n) == n_fields - 1).all():
        return None
    if len(spaces):  # an empty field: a space at either end of a line or next to another space
        if spaces[0] == 0 or spaces[-1] == len(arr) - 1:
            return None
        before, after = arr[spaces - 1], arr[spaces + 1]
        if ((before == 0x0A) | (before == 0x20) | (after == 0x0A)).any():
            return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    # Field k of line i spans starts[i, k]:ends[i, k]: the checks above leave exactly one separator between fields.
    seps = np.flatnonzero((arr == 0x20) | (arr == 0x0A))
    starts = np.concatenate(([0], seps + 1)).reshape(n, n_fields)
    ends = np.concatenate((seps, [len(arr)])).reshape(n, n_fields)
    if labelled:
        label_bytes = arr[starts[:, -1]]
        if not ((ends[:, -1] - starts[:, -1] == 1) & ((label_bytes == 0x30) | (label_bytes == 0x31))).all():
            return None
    # Codes once here make the duplicate check an integer one and spare `trial_scores` a string lookup per
    # trial; names are checked once per unique name.
    factorized = _factorize_spans(body, starts[:, :n_names].ravel(), ends[:, :n_names].ravel())
    if factorized is None:
        names = np.array(text.replace("\n", " ").split(" "), dtype=object).reshape(n, n_fields)[:, :n_names]
        flat_codes, uniques = pd.factorize(names.ravel())
        uniques = np.asarray(uniques, dtype=object)
    else:
        flat_codes, uniques = factorized
    if _bad_names(uniques, b"/" in body or b"\\" in body).any():
        return None
    codes = flat_codes.reshape(n, n_names)
    # The entry of a line is its names (a valid line is exactly its names joined by single spaces).
    key = codes[:, 0].astype(np.int64)
    for j in range(1, n_names):
        key = key * len(uniques) + codes[:, j]
    if n > 1 and (np.diff(np.sort(key)) == 0).any():
        return None
    fields = uniques[codes]
    if labelled:
        fields = np.column_stack([fields, np.where(label_bytes == 0x31, "1", "0").astype(object)])
    return lines, fields, codes, np.asarray(uniques, dtype=object)


def _factorize_spans(body: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`pd.factorize` of the names at body[starts:ends], without making a Python string per occurrence.

    Each name, zero-padded to a multiple of 8 bytes (names hold no NUL: the parse refuses control characters),
    is read as 64-bit words and hashed; the codes of the hashes are those of the names once every name is
    checked equal to the first name with its hash. None (use the string path) for long names or a collision.

    Returns:
        Codes (in order of first appearance, as `pd.factorize`) and the unique names as an object array.
    """
    lengths = ends - starts
    width = -(-int(lengths.max()) // 8) * 8
    if width > _MAX_HASHED_NAME:
        return None
    padded = np.concatenate((np.frombuffer(body, dtype=np.uint8), np.zeros(width, dtype=np.uint8)))
    rows = np.lib.stride_tricks.sliding_window_view(padded, width)[starts]  # a copy: (names, width) bytes
    rows[np.arange(width) >= lengths[:, None]] = 0
    words = rows.view(np.uint64)
    key = words[:, 0].copy()
    for j in range(1, words.shape[1]):
        key = key * np.uint64(0x9E3779B97F4A7C15) + words[:, j]  # wraps modulo 2**64; collisions are checked
    codes, _ = pd.factorize(key)
    # Codes come in order of first appearance, so a name is new exactly where its code exceeds all before it.
    new = np.ones(len(codes), dtype=bool)
    new[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    first = np.flatnonzero(new)
    if words.shape[1] > 1 and (words != words[first][codes]).any():
        return None
    uniques = [body[a:b].decode("utf-8") for a, b in zip(starts[first].tolist(), ends[first].tolist(), strict=True)]
    return codes, np.array(uniques, dtype=object)


def _join(names: np.ndarray) -> np.ndarray:
    """Row-wise `" ".join` of an object array of names, without a Python loop over rows."""
    out = names[:, 0].copy()
    for j in range(1, names.shape[1]):
        out = out + " " + names[:, j]
    return out


def read_trials(path: str | Path, labelled: bool) -> pd.DataFrame:
    """Read a trial file strictly.

    Args:
        path: `a.jpg b.jpg` lines (test) or `a.jpg b.jpg 0|1` lines (validation).
        labelled: Whether each line ends with a 0/1 label.

    Returns:
        Columns `a`, `b`, `trial` (the line verbatim, without its label) and, when labelled, `label` (int8);
        row i is line i + 1. `attrs["source"]` holds the path, for later messages.

    Raises:
        TrialFileError: `PATH:LINE: what is wrong`, for the first bad line.
    """
    form = "a.jpg b.jpg 0|1" if labelled else "a.jpg b.jpg"
    lines, fields, codes, uniques = _parse(Path(path), 2, labelled, TrialFileError, form)
    trial = _join(fields[:, :2]) if labelled else np.asarray(lines, dtype=object)
    dtype = pd.CategoricalDtype(pd.Index(uniques, dtype=object))
    frame = pd.DataFrame(
        {
            "a": pd.Categorical.from_codes(codes[:, 0], dtype=dtype),
            "b": pd.Categorical.from_codes(codes[:, 1], dtype=dtype),
            "trial": trial,
        }
    )
    if labelled:
        frame["label"] = (fields[:, 2] == "1").astype(np.int8)
    frame.attrs["source"] = str(path)
    frame.attrs[CHECKED] = _Checked(frame)
    return frame


# The index stage writes the trial manifests in the trial-file format itself, not as CSV: `read_trials` parses
# 900,000 lines into shared categorical names (one lookup per image, not per trial) in a third of the time
# `pd.read_csv` takes, and its frame is one the submission writer knows to hold distinct, non-empty trials.
TRIAL_MANIFESTS = {"val_trials": True, "test_trials": False}  # manifest name -> labelled


def read_trial_manifest(index: str | Path, name: str) -> pd.DataFrame:
    """A trial manifest the index stage wrote (`val_trials` or `test_trials`), as `read_trials` returns it:
    columns a, b (categoricals), trial and, for validation, label; errors name the manifest's file and line."""
    if name not in TRIAL_MANIFESTS:
        raise ValueError(f"unknown trial manifest {name!r}: use one of {sorted(TRIAL_MANIFESTS)}")
    return read_trials(Path(index) / f"{name}.txt", labelled=TRIAL_MANIFESTS[name])


def write_trials(path: str | Path, trials: pd.DataFrame, labelled: bool) -> None:
    """Write a trial frame back in the trial-file format (`a.jpg b.jpg` or `a.jpg b.jpg 0|1` lines, LF endings),
    so that `read_trials` gives the same frame again. Not atomic on its own: the index stage writes into its
    temporary folder."""
    lines = trials["trial"].to_numpy(dtype=object)
    if labelled:
        lines = lines + np.where(trials["label"].to_numpy() == 1, " 1", " 0").astype(object)
    Path(path).write_text("\n".join(lines.tolist()) + "\n", encoding="utf-8", newline="")


def checked_trials(trials: object) -> bool:
    """Whether `trials` is the frame `read_trials` returned, with its `trial` column, whose texts are known to be
    distinct and non-empty. A copy, slice or concatenation is not (pandas deep-copies `attrs`, which drops the
    mark), nor is the frame once its `trial` column is replaced; values edited in place are not detected."""
    if not isinstance(trials, pd.DataFrame) or "trial" not in trials.columns:
        return False
    mark = trials.attrs.get(CHECKED)
    return (
        isinstance(mark, _Checked)
        and mark.frame() is trials
        and mark.texts() is trials["trial"].array
        and mark.rows == len(trials)
    )


def check_trial_images(trials: pd.DataFrame, folder: str | Path) -> None:
    """Check that every file a trial names exists in `folder` (one directory listing, not a stat per trial).

    Raises:
        TrialFileError: naming the first trial line with a missing file and how many files are missing.
    """
    folder = Path(folder)
    try:
        present = set(os.listdir(folder))
    except FileNotFoundError:
        raise TrialFileError(f"{folder}: image folder not found") from None
    a_missing = ~trials["a"].isin(present).to_numpy(dtype=bool)
    b_missing = ~trials["b"].isin(present).to_numpy(dtype=bool)
    bad = a_missing | b_missing
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    name = trials["a"].iloc[row] if a_missing[row] else trials["b"].iloc[row]
    missing = set(trials["a"].to_numpy()[a_missing]) | set(trials["b"].to_numpy()[b_missing])
    source = trials.attrs.get("source", "trials")
    raise TrialFileError(
        f"{source}:{int(trials.index[row]) + 1}: {name!r} is not in {folder} "
        f"({len(missing)} referenced file(s) missing, used by {int(bad.sum())} trial(s))"
    )


class OrderFileError(ValueError):
    """An order file (or the ids it gives) that cannot be used; the message reads `PATH:LINE: what is wrong`."""


def read_order(path: str | Path) -> list[str]:
    """The classification order file: one image file name per line, in the required row order.

    Raises:
        OrderFileError: `PATH:LINE: what is wrong` for blank interior lines, duplicates, spaces,
            absolute or `..` paths, or an empty file (a BOM, CRLF and trailing blank lines are fine).
    """
    lines, _ = read_name_table(path, 1, labelled=False, error=OrderFileError, form="one image file name")
    return lines


def classification_ids(order: Sequence[str], mode: Literal["stem", "name"] = "stem") -> list[str]:
    """Submission ids for order-file names: "stem" drops the extension ("12.jpg" -> "12"), "name" keeps it."""
    if mode == "name":
        ids = list(order)
    elif mode == "stem":
        ids = [posixpath.splitext(name)[0] for name in order]
    else:
        raise ValueError(f"unknown classification id mode {mode!r}: use 'stem' or 'name'")
    dup = pd.Series(ids, dtype=object).duplicated()
    if dup.any():
        j = int(np.flatnonzero(dup.to_numpy())[0])
        i = ids.index(ids[j])
        raise OrderFileError(f"order names {order[i]!r} and {order[j]!r} both give the id {ids[j]!r}")
    return ids
