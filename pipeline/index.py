"""Validate a competition folder in the HW2P2 layout and write its manifests (the index stage).

Every problem is collected and reported together, with file and line, before any training starts.
Manifests (CSV, paths relative to the competition root, POSIX separators):

- ``train.csv``: path, identity, subset          - ``classes.csv``: class, identity
- ``val_classification.csv``: path, identity     - ``test_classification.csv``: path, id
- ``val_verification.csv`` / ``test_verification.csv``: path, name (unique images the trials use)
- ``val_trials.txt``: ``a b label`` lines        - ``test_trials.txt``: ``a b`` lines (the trial-file format,
  normalised: no BOM, LF endings, no trailing blank lines; `pipeline.trial_files.read_trial_manifest` reads them)
- ``bad_images.csv``: path, error                - ``summary.json``: counts
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from pipeline import images
from pipeline.archive import LayoutError
from pipeline.io import atomic_dir, write_json
from pipeline.params import DataParams, LayoutParams, SubmissionParams
from pipeline.trial_files import (
    TRIAL_MANIFESTS,
    check_trial_images,
    classification_ids,
    read_order,
    read_trials,
    write_trials,
)

log = logging.getLogger(__name__)


def natural_key(name: str) -> list:
    """Sort "2" before "10": identity folders are strings, and string order is the classic label bug."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted((e.name for e in it if e.is_dir() and not e.name.startswith(".")), key=natural_key)


def _identity_images(folder: Path, subset: str | None = None) -> pd.DataFrame:
    rows = []
    for identity in _subdirs(folder):
        for name in images.list_images(folder / identity):
            rows.append((f"{identity}/{name}", identity))
    df = pd.DataFrame(rows, columns=["path", "identity"])
    if subset is not None:
        df["subset"] = subset
    return df


def _rel(root: Path, folder: Path) -> str:
    return folder.relative_to(root).as_posix()


def scan(root: Path, layout: LayoutParams, data: DataParams, submission: SubmissionParams) -> dict[str, pd.DataFrame]:
    """Read the layout under `root` into manifest frames; raise LayoutError listing every problem found."""
    problems: list[str] = []
    required = {
        **{f"training subset {s!r}": root / layout.train_dir / s for s in data.train_subsets},
        "classification validation folder": root / layout.val_classification_dir,
        "classification test folder": root / layout.test_classification_dir,
        "test order file": root / layout.test_order,
        "verification validation folder": root / layout.val_verification_dir,
        "validation trial file": root / layout.val_trials,
        "verification test folder": root / layout.test_verification_dir,
        "test trial file": root / layout.test_trials,
    }
    for what, path in required.items():
        if not path.exists():
            problems.append(f"{path}: missing ({what}; set its name under `layout:` in params.yaml if it differs)")
    if problems:
        raise LayoutError("\n".join(problems))

    frames: dict[str, pd.DataFrame] = {}
    train_parts = []
    for subset in data.train_subsets:
        folder = root / layout.train_dir / subset
        part = _identity_images(folder, subset)
        part["path"] = _rel(root, folder) + "/" + part["path"]
        if part.empty:
            problems.append(f"{folder}: no images in <identity>/<image> folders")
        train_parts.append(part)
    train = pd.concat(train_parts, ignore_index=True)
    identities = sorted(train["identity"].unique(), key=natural_key)
    frames["train"] = train
    frames["classes"] = pd.DataFrame({"class": range(len(identities)), "identity": identities})

    val_folder = root / layout.val_classification_dir
    val = _identity_images(val_folder)
    val["path"] = _rel(root, val_folder) + "/" + val["path"]
    unknown = sorted(set(val["identity"]) - set(identities), key=natural_key)
    if unknown:
        problems.append(
            f"{val_folder}: {len(unknown)} identities have no training images (e.g. {unknown[:5]}); "
            "classification validation must use training identities"
        )
    frames["val_classification"] = val

    test_folder = root / layout.test_classification_dir
    try:
        order = read_order(root / layout.test_order)
        present = set(images.list_images(test_folder))
        missing = [(i + 1, n) for i, n in enumerate(order) if n not in present]
        if missing:
            line, name = missing[0]
            problems.append(
                f"{root / layout.test_order}:{line}: {name!r} is not in {test_folder} "
                f"({len(missing)} listed files missing)"
            )
        frames["test_classification"] = pd.DataFrame(
            {
                "path": [f"{_rel(root, test_folder)}/{n}" for n in order],
                "id": classification_ids(order, submission.classification_id),
            }
        )
    except ValueError as err:
        problems.append(str(err))

    for split, folder_name, trials_name, labelled in (
        ("val", layout.val_verification_dir, layout.val_trials, True),
        ("test", layout.test_verification_dir, layout.test_trials, False),
    ):
        folder = root / folder_name
        try:
            trials = read_trials(root / trials_name, labelled=labelled)
            check_trial_images(trials, folder)
        except ValueError as err:
            problems.append(str(err))
            continue
        if labelled and trials["label"].nunique() < 2:
            problems.append(f"{root / trials_name}: every trial has the same label; AUC needs both 0 and 1")
        names = sorted(set(trials["a"]).union(trials["b"]))
        frames[f"{split}_verification"] = pd.DataFrame(
            {"path": [f"{_rel(root, folder)}/{n}" for n in names], "name": names}
        )
        frames[f"{split}_trials"] = trials
    if problems:
        raise LayoutError("\n".join(problems))
    return frames


def check_images(root: Path, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Decode every image once; return the bad ones as (path, error)."""
    paths = sorted(set().union(*(f["path"] for k, f in frames.items() if "path" in f.columns)))

    def check(rel: str) -> str | None:
        try:
            images.read_image(root / rel)
        except (images.BadImage, OSError) as err:
            return str(err)
        return None

    errors = images.parallel_map(check, paths, desc="checking images")
    return pd.DataFrame([(p, e) for p, e in zip(paths, errors, strict=True) if e], columns=["path", "error"])


def build_index(
    root: Path, out: Path, layout: LayoutParams, data: DataParams, submission: SubmissionParams
) -> dict[str, int]:
    """Scan, check every image and write the manifests atomically into `out`.

    With ``data.on_bad_image: fail`` any bad image stops here with the whole list (also written to
    ``<out>.bad_images.csv``). With ``skip``, bad training/validation images are dropped; test images must keep
    their row in the submission, so they stay and are decoded as grey placeholders.
    """
    frames = scan(root, layout, data, submission)
    bad = check_images(root, frames)
    report = out.with_name(out.name + ".bad_images.csv")  # beside `out`: a failed run writes no `out`
    if len(bad) and data.on_bad_image == "fail":
        report.parent.mkdir(parents=True, exist_ok=True)
        bad.to_csv(report, index=False)
        listing = "\n".join(f"  {root / p}: {e}" for p, e in bad.itertuples(index=False))
        raise LayoutError(
            f"{len(bad)} unreadable images (list in {report}; set data.on_bad_image: skip to drop them):\n{listing}"
        )
    if len(bad):
        bad_set = set(bad["path"])
        for name in ("train", "val_classification"):
            frames[name] = frames[name][~frames[name]["path"].isin(bad_set)].reset_index(drop=True)
        trials = frames["val_trials"]
        folder = root / layout.val_verification_dir
        bad_names = {Path(p).name for p in bad_set if (root / p).parent == folder}
        kept = trials[~(trials["a"].isin(bad_names) | trials["b"].isin(bad_names))]
        if kept["label"].nunique() < 2:
            raise LayoutError(
                f"{root / layout.val_trials}: after skipping {len(bad)} unreadable images, the validation trials "
                f"left ({len(kept)} of {len(trials)}) no longer hold both labels; AUC needs both 0 and 1"
            )
        frames["val_trials"] = kept
        log.warning(
            "skipped %d unreadable images (data.on_bad_image: skip): listed in %s", len(bad), out / "bad_images.csv"
        )
    frames["bad_images"] = bad
    summary = {name: len(df) for name, df in frames.items()}
    summary["identities"] = len(frames["classes"])
    with atomic_dir(out) as tmp:
        for name, df in frames.items():
            if name in TRIAL_MANIFESTS:
                write_trials(tmp / f"{name}.txt", df, labelled=TRIAL_MANIFESTS[name])
            else:
                df.to_csv(tmp / f"{name}.csv", index=False)
        write_json(tmp / "summary.json", summary)
    report.unlink(missing_ok=True)  # a failed run's list no longer describes the data: the manifests do
    return summary
