"""`python -m pipeline validate FILE`: check a submission CSV against the competition's order or trial file.

Exit status 0 with "OK: FILE (N rows)", or 1 with the first problem (file and line) on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import paths
from pipeline.params import PARAMS_FILE

TASKS = ("classification", "verification")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="submission CSV (classification.csv or verification.csv)")
    parser.add_argument("--task", choices=TASKS, help="default: inferred from the header")
    parser.add_argument("--root", type=Path, default=paths.RAW, help="competition folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")


def infer_task(file: Path, classification_header: tuple[str, str], verification_header: tuple[str, str]) -> str:
    """The task whose header the file starts with; ValueError naming both headers otherwise."""
    with open(file, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    for task, header in zip(TASKS, (classification_header, verification_header), strict=True):
        if first == ",".join(header):
            return task
    raise ValueError(
        f"{file}:1: cannot tell the task from the header {first!r}: expected {','.join(classification_header)!r} "
        f"(classification) or {','.join(verification_header)!r} (verification); pass --task"
    )


def identity_names(train_root: Path, subsets: list[str]) -> set[str]:
    """Identity folder names under `train_root/<subset>` for every training subset."""
    names: set[str] = set()
    for subset in subsets:
        folder = train_root / subset
        if not folder.is_dir():
            raise ValueError(f"{folder}: training folder not found; the identity names are its sub-folders")
        names.update(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"no identity folders under {train_root} ({', '.join(subsets)})")
    return names


def main(args: argparse.Namespace) -> int:
    from pipeline.params import load_params
    from pipeline.submission import validate_classification, validate_verification
    from pipeline.trial_files import classification_ids, read_order, read_trials

    try:
        params = load_params(args.params, check_model=False)
        sub = params.submission
        task = args.task or infer_task(args.file, sub.classification_header, sub.verification_header)
        layout = params.layout
        if task == "classification":
            order_file = args.root / layout.test_order
            ids = classification_ids(read_order(order_file), sub.classification_id)
            identities = identity_names(args.root / layout.train_dir, params.data.train_subsets)
            frame = validate_classification(
                args.file, ids, sub.classification_header, identities, reference=f"the order file {order_file}"
            )
        else:
            trial_file = args.root / layout.test_trials
            trials = read_trials(trial_file, labelled=False)
            frame = validate_verification(
                args.file, trials, sub.verification_header, reference=f"the trial file {trial_file}"
            )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"OK: {args.file} ({len(frame)} rows)")
    return 0
