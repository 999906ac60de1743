"""Writers, validators and the local scorer for the two submission CSVs.

`classification.csv`: header `id,label` (params), one row per order-file line in its order; `label` is the
identity folder name, never a class index. `verification.csv`: header `trial,score`, one row per trial line
in its order, `trial` being the line verbatim. The writers run the validators' row checks in memory before
anything reaches disk, and the scorer validates exactly as Kaggle would before it scores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.io import atomic_path
from pipeline.trial_files import checked_trials

Header = Sequence[str]
Kind = Literal["classification", "verification"]


class SubmissionError(ValueError):
    """A submission (or order/solution file) that cannot be used; the message names the file and line."""


def _trial_texts(trials: pd.DataFrame | Sequence[str]) -> np.ndarray:
    if isinstance(trials, pd.DataFrame):
        return trials["trial"].to_numpy(dtype=object)
    return np.asarray(list(trials), dtype=object)


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _check_rows(
    path: str | Path,
    header: Header,
    ids: np.ndarray,
    values: np.ndarray | None,
    expected: np.ndarray | None,
    kind: Kind,
    identities: Collection[str] | None = None,
    scores: np.ndarray | None = None,
    reference: str = "the order file",
) -> None:
    """Raise for the first bad data row (line = row + 2, the header being line 1); also check the row count.

    Args:
        ids, values: The two columns as strings (`values`: labels, or scores as written; None for scores the
            writer is about to format, which are never empty: messages then format `scores`).
        expected: The ids the rows must carry, in order; None checks ids only for emptiness and duplicates.
        scores: Verification scores as floats (NaN where `values` is not a number).
    """
    id_name, value_name = header
    n = len(ids)
    ids_s = pd.Series(ids, dtype=object)
    values_s = pd.Series(values, dtype=object) if values is not None else None
    problems: list[tuple[np.ndarray, Callable[[int], str]]] = []  # (mask, message for a row), by priority
    empty_id = (ids_s == "").to_numpy(dtype=bool)
    empty_value = (values_s == "").to_numpy(dtype=bool) if values_s is not None else np.zeros(n, dtype=bool)
    problems.append((empty_id & empty_value, lambda r: "blank line (or a row with both fields empty)"))
    problems.append((empty_id, lambda r: f"empty {id_name}"))
    dup = ids_s.duplicated().to_numpy(dtype=bool)

    def dup_msg(r: int) -> str:
        return f"duplicate {id_name} {ids[r]!r}, first on line {int(np.flatnonzero(ids == ids[r])[0]) + 2}"

    problems.append((dup, dup_msg))
    if expected is not None:
        m = min(n, len(expected))
        mismatch = np.zeros(n, dtype=bool)
        mismatch[:m] = ids[:m] != expected[:m]
        position = {}
        if mismatch.any():
            position = {v: i for i, v in enumerate(expected.tolist())}

        def mismatch_msg(r: int) -> str:
            got, want = ids[r], expected[r]
            if got in position:
                return (
                    f"{id_name} {got!r} is out of order: {reference} wants {want!r} here "
                    f"and {got!r} on line {position[got] + 2}"
                )
            return f"{id_name} {got!r} is not in {reference} (expected {want!r} here)"

        problems.append((mismatch, mismatch_msg))
    problems.append((empty_value, lambda r: f"empty {value_name}"))
    if kind == "classification":
        if identities is not None:
            known = set(identities)
            unknown = ~values_s.isin(known).to_numpy(dtype=bool)
            example = min(known, key=lambda s: (len(s), s)) if known else "?"

            def label_msg(r: int) -> str:
                label = values[r]
                hint = (
                    f"; a class index? labels must be identity folder names such as {example!r}"
                    if str(label).lstrip("-").isdigit()
                    else ""
                )
                return f"{value_name} {label!r} is not a known identity name{hint}"

            problems.append((unknown, label_msg))
    else:
        assert scores is not None

        def score_msg(r: int) -> str:
            written = values[r] if values is not None else _SCORE_FORMAT[scores.dtype == np.float32] % scores[r].item()
            return f"{value_name} {written!r} is not a finite number"

        problems.append((~np.isfinite(scores), score_msg))
    bad_rows = [(row, k) for k, (mask, _) in enumerate(problems) if (row := _first(mask)) is not None]
    count = "" if expected is None or n == len(expected) else f" (the file has {n} rows, expected {len(expected)})"
    if bad_rows:
        row, k = min(bad_rows)
        raise SubmissionError(f"{path}:{row + 2}: {problems[k][1](row)}{count}")
    if expected is not None and n > len(expected):
        raise SubmissionError(f"{path}:{len(expected) + 2}: extra rows: {n} rows, but {reference} has {len(expected)}")
    if expected is not None and n < len(expected):
        raise SubmissionError(
            f"{path}:{n + 2}: the file ends after {n} rows, but {reference} has {len(expected)} "
            f"(next expected {id_name}: {expected[n]!r})"
        )
    if n == 0:
        raise SubmissionError(f"{path}: no data rows after the header")


def _read_csv(path: str | Path, header: Header) -> tuple[pd.DataFrame, str | None]:
    """A two-column CSV as strings after its exact header; row i is line i + 2 (trailing blank lines dropped).

    Returns:
        The rows, and the message for a line with a wrong field count (the rows then stop above it, so that
        an earlier problem can still be reported first), or None.
    """
    path = Path(path)
    expected = ",".join(header)
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise SubmissionError(f"{path}:1: empty file: expected the header {expected!r}")
    got = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if got != expected:
        hint = " (did you write the index column?)" if got.startswith(",") else ""
        raise SubmissionError(f"{path}:1: header is {got!r}, expected {expected!r}{hint}")
    options: dict[str, Any] = {
        "header": None,
        "dtype": str,
        "keep_default_na": False,
        "na_filter": False,
        "skip_blank_lines": False,
    }
    field_error = None
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", **options)
    except UnicodeDecodeError as err:
        raise SubmissionError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if not found:
            raise SubmissionError(f"{path}: not a readable CSV file: {err}") from None
        line = int(found.group(2))
        frame = pd.read_csv(path, encoding="utf-8-sig", nrows=line - 1, **options)
        field_error = f"{path}:{line}: expected 2 fields, found {found.group(3)}"
    if frame.shape[1] != 2:
        raise SubmissionError(f"{path}: expected 2 columns, found {frame.shape[1]}")
    body = frame.iloc[1:].reset_index(drop=True)
    blank = ((body[0] == "") & (body[1] == "")).to_numpy(dtype=bool)
    keep = len(body) - (int(np.argmin(blank[::-1])) if not blank.all() else len(body))
    return body.iloc[:keep], field_error


def _scores_of(values: np.ndarray) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object).str.strip(), errors="coerce").to_numpy(np.float64)


def validate_classification(
    path: str | Path,
    order_ids: Sequence[str],
    header: Header,
    identities: Collection[str] | None = None,
    reference: str = "the order file",
) -> pd.DataFrame:
    """Check a classification CSV: exact header, one row per order id in order, labels that are identity names.

    Returns:
        The rows as strings, columns named by `header`.

    Raises:
        SubmissionError: naming the file and its first bad line (the header is line 1).
    """
    frame, field_error = _read_csv(path, header)
    ids, labels = frame[0].to_numpy(dtype=object), frame[1].to_numpy(dtype=object)
    expected = np.asarray(list(order_ids), dtype=object)
    if field_error:
        if len(ids):  # the rows stop above the bad line: check them, but not their count
            _check_rows(
                path, header, ids, labels, expected[: len(ids)], "classification", identities, reference=reference
            )
        raise SubmissionError(field_error)
    _check_rows(path, header, ids, labels, expected, "classification", identities, reference=reference)
    return pd.DataFrame({header[0]: ids, header[1]: labels})


def validate_verification(
    path: str | Path,
    trial_texts: pd.DataFrame | Sequence[str],
    header: Header,
    reference: str = "the trial file",
) -> pd.DataFrame:
    """Check a verification CSV: exact header, one row per trial line in order, finite numeric scores.

    Returns:
        Columns named by `header`: the trial strings and the scores as float64.

    Raises:
        SubmissionError: naming the file and its first bad line (the header is line 1).
    """
    frame, field_error = _read_csv(path, header)
    ids, values = frame[0].to_numpy(dtype=object), frame[1].to_numpy(dtype=object)
    scores = _scores_of(values)
    expected = _trial_texts(trial_texts)
    if field_error:
        if len(ids):  # the rows stop above the bad line: check them, but not their count
            _check_rows(
                path, header, ids, values, expected[: len(ids)], "verification", scores=scores, reference=reference
            )
        raise SubmissionError(field_error)
    _check_rows(path, header, ids, values, expected, "verification", scores=scores, reference=reference)
    return pd.DataFrame({header[0]: ids, header[1]: scores})


def _write_two_columns(path: str | Path, header: Header, first: list[str], second: list[str]) -> None:
    text = ",".join(header) + "\n" + "\n".join(map(",".join, zip(first, second, strict=True))) + "\n"
    n = len(first) + 1
    if text.count(",") != n or text.count("\n") != n or '"' in text or "\r" in text:
        # Some field needs CSV quoting: let pandas do it properly (slower, so only then).
        frame = pd.DataFrame({header[0]: first, header[1]: second})
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_classification(
    path: str | Path,
    ids: Sequence[str],
    labels: Sequence[str],
    header: Header,
    identities: Collection[str] | None = None,
) -> None:
    """Validate in memory, then atomically write `classification.csv`.

    Args:
        ids: Submission ids in order-file order (see `classification_ids`).
        labels: Predicted identity folder names (strings), one per id.
        identities: Known identity names; a label outside them (a class index, say) is refused.
    """
    ids_a = np.asarray(list(ids), dtype=object)
    labels_a = np.asarray(list(labels), dtype=object)
    if len(ids_a) != len(labels_a):
        raise SubmissionError(f"{path}: {len(ids_a)} ids but {len(labels_a)} labels")
    if len(ids_a) and pd.api.types.infer_dtype(ids_a, skipna=False) != "string":
        raise SubmissionError(f"{path}: ids must be strings, got values such as {ids_a[0]!r}")
    kind = pd.api.types.infer_dtype(labels_a, skipna=False)
    if len(labels_a) and kind != "string":
        raise SubmissionError(
            f"{path}: labels must be identity folder names (strings), got {kind} values such as {labels_a[0]!r}; "
            "map class indices through the identity list first"
        )
    _check_rows(path, header, ids_a, labels_a, None, "classification", identities)
    _write_two_columns(path, header, ids_a.tolist(), labels_a.tolist())


def write_verification(
    path: str | Path,
    trials: pd.DataFrame | Sequence[str],
    scores: np.ndarray | Sequence[float],
    header: Header,
) -> None:
    """Validate in memory, then atomically write `verification.csv`.

    Args:
        trials: The trial frame (its `trial` column) or the trial lines, in trial-file order.
        scores: One similarity score per trial; float32 is written with 9 significant digits and float64
            with its shortest round-trip form, so reading the file back gives the same ranking, ties included.
    """
    texts = _trial_texts(trials)
    values = np.asarray(scores)
    if values.ndim != 1 or len(values) != len(texts):
        raise SubmissionError(f"{path}: {len(texts)} trials but scores of shape {values.shape}")
    if values.dtype.kind not in "fiu":
        raise SubmissionError(f"{path}: scores must be numbers, got dtype {values.dtype}")
    values = values if values.dtype == np.float32 else values.astype(np.float64)
    if checked_trials(trials):
        # `read_trials` already refused empty and duplicated trials: only the scores are left to check.
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            written = _SCORE_FORMAT[values.dtype == np.float32] % values[row].item()
            raise SubmissionError(f"{path}:{row + 2}: {header[1]} {written!r} is not a finite number")
    else:
        if len(texts) and pd.api.types.infer_dtype(texts, skipna=False) != "string":
            raise SubmissionError(f"{path}: trials must be strings, got values such as {texts[0]!r}")
        _check_rows(path, header, texts, None, None, "verification", scores=values)
    text = _verification_text(header, texts.tolist(), values)
    n = len(texts) + 1
    if text.count(",") != n or text.count("\n") != n or '"' in text or "\r" in text:
        # A trial needs CSV quoting: let pandas do it properly (slower, so only then).
        written = [_SCORE_FORMAT[values.dtype == np.float32] % v for v in values.tolist()]
        _write_two_columns(path, header, texts.tolist(), written)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


_SCORE_FORMAT = {True: "%.9g", False: "%r"}  # by "is float32": 9 significant digits, or float64's shortest repr


def _verification_text(header: Header, texts: list[str], values: np.ndarray) -> str:
    """The CSV text, formatted by one `%` over all rows: about twice as fast as formatting and joining per row."""
    n = len(texts)
    flat: list = [None] * (2 * n)
    flat[0::2] = texts
    flat[1::2] = values.tolist()
    return ",".join(header) + "\n" + (f"%s,{_SCORE_FORMAT[values.dtype == np.float32]}\n" * n) % tuple(flat)


def _rows(n: int, rows: np.ndarray | None) -> np.ndarray:
    """Row positions selected by a boolean mask or an integer index (all rows for None)."""
    if rows is None:
        return np.arange(n)
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"row mask has shape {rows.shape}, expected ({n},)")
        return np.flatnonzero(rows)
    if rows.dtype.kind not in "iu" or rows.ndim != 1:
        raise ValueError(f"rows must be a boolean mask or integer positions, got dtype {rows.dtype}")
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"row positions must lie in [0, {n}), got {rows.min()}..{rows.max()}")
    return rows


def _read_solution(path: str | Path, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """The hidden answers: (ids, labels) by column position, whatever the header names."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except pd.errors.ParserError as err:
        raise SubmissionError(f"{path}: not a readable solution CSV: {err}") from None
    if frame.shape[1] != 2:
        raise SubmissionError(f"{path}: a solution file has 2 columns, found {frame.shape[1]}")
    ids, labels = frame.iloc[:, 0].to_numpy(dtype=object), frame.iloc[:, 1].to_numpy(dtype=object)
    if kind == "verification":
        bad = _first(~pd.Series(labels, dtype=object).isin(["0", "1"]).to_numpy(dtype=bool))
        if bad is not None:
            raise SubmissionError(f"{path}:{bad + 2}: label must be 0 or 1, got {labels[bad]!r}")
    return ids, labels


def score_classification(
    submission_path: str | Path, solution_path: str | Path, header: Header, rows: np.ndarray | None = None
) -> float:
    """Accuracy of a classification submission, validated against the solution's ids first.

    Args:
        rows: Optional boolean mask or integer positions of the rows to score (a public/private split);
            the whole file is validated either way.
    """
    ids, truth = _read_solution(solution_path, "classification")
    frame = validate_classification(submission_path, ids, header, reference=f"the solution {solution_path}")
    pick = _rows(len(ids), rows)
    return metrics.accuracy(truth[pick], frame.iloc[:, 1].to_numpy(dtype=object)[pick])


def verification_labels_scores(
    submission_path: str | Path, solution_path: str | Path, header: Header, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels, scores) of a verification submission, aligned with the solution's rows."""
    ids, truth = _read_solution(solution_path, "verification")
    frame = validate_verification(submission_path, ids, header, reference=f"the solution {solution_path}")
    pick = _rows(len(ids), rows)
    return (truth[pick] == "1").astype(np.int8), frame.iloc[:, 1].to_numpy(dtype=np.float64)[pick]


def score_verification(
    submission_path: str | Path, solution_path: str | Path, header: Header, rows: np.ndarray | None = None
) -> float:
    """ROC AUC of a verification submission (ties count half), validated against the solution's trials first.

    Args:
        rows: Optional boolean mask or integer positions of the rows to score; the whole file is validated.
    """
    labels, scores = verification_labels_scores(submission_path, solution_path, header, rows)
    return metrics.roc_auc(labels, scores)
