"""`submissions/history.csv`: one row per Kaggle submission, with what produced it and what it scored locally.

Columns: time (UTC), task, competition, file, sha256, message, kaggle_ref, git_commit, params_sha256, then one
column per local validation metric (the numeric top-level keys of `metrics/ensemble.json`; a new key adds a
column). `git_commit` gets `-dirty` only for changes to source files: DVC outputs, dvc.lock and history.csv
itself do not count. The file is meant to be committed (the team's submission record); it is rewritten whole
and renamed into place under a lock, so a crash or a second `submit` running at the same time never leaves a
torn or lost row. No credential ever reaches it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pipeline import paths
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

HISTORY = paths.SUBMISSIONS / "history.csv"
ENSEMBLE_METRICS = paths.METRICS / "ensemble.json"
FIELDS = ("time", "task", "competition", "file", "sha256", "message", "kaggle_ref", "git_commit", "params_sha256")
# The local metric that predicts each task's leaderboard score (same metric as Kaggle's).
LOCAL_METRIC = {"classification": "val_accuracy", "verification": "val_auc"}


class HistoryError(ValueError):
    """A history file that cannot be read; the message names the file and line."""


# Files that running the pipeline or `submit` rewrites besides the outputs dvc.yaml lists: they never make a
# tree "dirty" (the code and params that produced them are what the commit names).
GENERATED = ("dvc.lock", "submissions/history.csv")


def _git(args: list[str], cwd: str | Path | None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def dvc_output_patterns(dvc_yaml: str | Path) -> list[str]:
    """The outs, metrics and plots of every stage in `dvc_yaml` (and its top-level plots), relative to its folder.

    `${...}` interpolations (foreach items, vars) become `*`, so one pattern covers every resolved path.
    """
    import yaml

    path = Path(dvc_yaml)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        log.debug("%s unreadable (%s): no DVC outputs known", path, err)
        return []

    def entries(items: object) -> list[str]:
        names = []
        for item in items if isinstance(items, list) else []:
            name = item if isinstance(item, str) else next(iter(item), None) if isinstance(item, dict) else None
            if isinstance(name, str):
                names.append(re.sub(r"\$\{[^}]*\}", "*", name).strip("/"))
        return names

    patterns: list[str] = []
    stages = doc.get("stages") if isinstance(doc, dict) else None
    for stage in (stages or {}).values():
        if not isinstance(stage, dict):
            continue
        body = stage["do"] if isinstance(stage.get("do"), dict) else stage
        for key in ("outs", "metrics", "plots"):
            patterns += entries(body.get(key))
    if isinstance(doc, dict):
        patterns += entries(doc.get("plots"))
    return patterns


def is_generated(path: str, patterns: list[str]) -> bool:
    """Whether the repository-relative `path` is a DVC output (a pattern, or a file under one) or in GENERATED."""
    if path in GENERATED:
        return True
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p.rstrip("/") + "/*") for p in patterns)


def changed_paths(cwd: str | Path | None = None) -> list[str]:
    """Tracked files that differ from HEAD (staged or not), relative to the repository root."""
    out = _git(["status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd)
    tokens = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(tokens):
        entry = tokens[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            i += 1  # the rename's or copy's source follows
    return paths


def dirty_paths(cwd: str | Path | None = None) -> list[str]:
    """Changed tracked files that are not DVC outputs nor GENERATED: what makes a commit hash `-dirty`."""
    root = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    patterns = dvc_output_patterns(root / "dvc.yaml")
    return [p for p in changed_paths(root) if not is_generated(p, patterns)]


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's commit hash, with `-dirty` when tracked source files differ from it; "" outside a repository.

    A tree whose only changes are DVC outputs (the outs, metrics and plots in dvc.yaml), dvc.lock and
    submissions/history.csv is clean: that is what `dvc repro` and `submit` leave behind.
    """
    try:
        head = _git(["rev-parse", "HEAD"], cwd).strip()
        dirty = dirty_paths(cwd)
    except (OSError, subprocess.SubprocessError):
        return ""
    if dirty:
        log.debug("uncommitted changes: %s", ", ".join(dirty))
    return head + ("-dirty" if dirty else "")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes ("" when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def local_metrics(path: str | Path = ENSEMBLE_METRICS) -> dict[str, float]:
    """The numeric top-level entries of the ensemble stage's metrics file; {} (with a warning) if unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("%s not found: history.csv gets no local validation metrics (run `dvc repro` first)", path)
        return {}
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s unreadable (%s): history.csv gets no local validation metrics", path, err)
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_history(path: str | Path = HISTORY) -> list[dict[str, str]]:
    """All rows (empty when the file does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("task", "competition", "kaggle_ref") if c not in (reader.fieldnames or [])]
        if missing:
            raise HistoryError(f"{path}:1: header lacks {', '.join(missing)}")
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise HistoryError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames or [])} fields")
            rows.append(row)
    return rows


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the history file's folder (no lock file left behind) while rewriting it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def append_row(row: Mapping[str, object], path: str | Path = HISTORY) -> None:
    """Add one row, widening the header if the row brings new metric columns."""
    path = Path(path)
    with _locked(path):
        rows = read_history(path)
        columns = list(FIELDS)
        extra = {k for r in [*rows, row] for k in r if k not in FIELDS}
        columns += sorted(extra)
        out = [*rows, {k: "" if v is None else str(v) for k, v in row.items()}]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(out)
