"""`python -m pipeline submit [FILE ...]`: validate submission CSVs, upload them to Kaggle, record each in history.csv.

With no FILE, both `submissions/classification.csv` and `submissions/verification.csv` (or the one `--task`
names); each FILE's task is read from its header, as `validate` does. Every file is validated before anything
is uploaded; each successful upload appends its row to `submissions/history.csv` at once (time, git commit,
params.yaml hash, local validation metrics, sha256, message, Kaggle reference), so a failure on the second file
never loses the record of the first. history.csv is meant to be committed: it is the team's submission record.
A submission Kaggle has already failed to score by the time the upload returns is reported with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.params import PARAMS_FILE, Params

log = logging.getLogger(__name__)

TASKS = ("classification", "verification")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="submission CSV(s), task read from the header (default: both files under submissions/)",
    )
    parser.add_argument(
        "--task", choices=(*TASKS, "both"), help="without FILE: what to submit (default: both); with one FILE: its task"
    )
    parser.add_argument("-m", "--message", help="submission description shown on Kaggle (default: commit and params)")
    parser.add_argument(
        "--classification-file", type=Path, default=paths.CLASSIFICATION_CSV, help="default: %(default)s"
    )
    parser.add_argument("--verification-file", type=Path, default=paths.VERIFICATION_CSV, help="default: %(default)s")
    parser.add_argument("--root", type=Path, default=paths.RAW, help="competition folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument(
        "--metrics", type=Path, default=Path("metrics/ensemble.json"), help="local metrics (default: %(default)s)"
    )
    parser.add_argument("--history", type=Path, default=Path("submissions/history.csv"), help="default: %(default)s")


def resolve_files(args: argparse.Namespace, params: Params) -> dict[str, Path]:
    """task -> file to submit, in task order: the FILE arguments (task from --task or the header), else defaults."""
    from pipeline.commands.validate import infer_task

    defaults = {"classification": args.classification_file, "verification": args.verification_file}
    if not args.files:
        tasks = TASKS if args.task in (None, "both") else (args.task,)
        return {task: defaults[task] for task in tasks}
    if args.task in TASKS and len(args.files) > 1:
        raise ValueError(f"--task {args.task} names the task of one file, but {len(args.files)} files were given")
    sub = params.submission
    found: dict[str, Path] = {}
    for file in args.files:
        if not file.is_file():
            raise FileNotFoundError(f"{file}: submission file not found (run `dvc repro` to write it)")
        task = args.task if args.task in TASKS else infer_task(file, sub.classification_header, sub.verification_header)
        if task in found:
            raise ValueError(f"{found[task]} and {file} are both {task} submissions: give one file per task")
        found[task] = file
    return {task: found[task] for task in TASKS if task in found}


@contextlib.contextmanager
def _quiet_client_success() -> Iterator[None]:
    """Drop the client's own INFO line for a successful upload while this command prints its own (once)."""

    def keep(record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and str(record.msg).startswith("submitted "))

    client_log = logging.getLogger("pipeline.kaggle_client")
    client_log.addFilter(keep)
    try:
        yield
    finally:
        client_log.removeFilter(keep)


def scoring_error(client: Any, slug: str, ref: int) -> str | None:
    """Kaggle's reason when it has already failed to score submission `ref`; None otherwise (or unknown)."""
    from pipeline.kaggle_client import KaggleError

    try:
        subs = client.submissions(slug, page_size=20, max_pages=1)
    except KaggleError as err:
        log.debug("could not read back the status of %s: %s", ref, err)
        return None
    for s in subs:
        if s.ref == ref and s.status == "ERROR":
            return s.error or "no reason given"
    return None


def validate(task: str, file: Path, root: Path, params: Params) -> int:
    """Validate one submission file against the competition's order or trial file; its row count."""
    from pipeline.commands.validate import identity_names
    from pipeline.submission import validate_classification, validate_verification
    from pipeline.trial_files import classification_ids, read_order, read_trials

    p = params
    if not file.is_file():
        raise FileNotFoundError(f"{file}: submission file not found (run `dvc repro` to write it)")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: competition folder not found, so {file} cannot be validated")
    sub, layout = p.submission, p.layout
    if task == "classification":
        order_file = root / layout.test_order
        ids = classification_ids(read_order(order_file), sub.classification_id)
        identities = identity_names(root / layout.train_dir, p.data.train_subsets)
        frame = validate_classification(
            file, ids, sub.classification_header, identities, reference=f"the order file {order_file}"
        )
    else:
        trial_file = root / layout.test_trials
        trials = read_trials(trial_file, labelled=False)
        frame = validate_verification(file, trials, sub.verification_header, reference=f"the trial file {trial_file}")
    return len(frame)


def main(args: argparse.Namespace) -> int:
    from pipeline.history import LOCAL_METRIC, append_row, file_sha256, git_commit, local_metrics, now
    from pipeline.kaggle_client import KaggleClient, KaggleError
    from pipeline.params import load_params

    try:
        params = load_params(args.params, check_model=False)
        files = resolve_files(args, params)
        for task, file in files.items():
            n = validate(task, file, args.root, params)
            log.info("%s: %d rows, valid %s submission", file, n, task)
        client = KaggleClient()
    except (ValueError, OSError, KaggleError) as err:
        log.error("%s", err)
        log.error("nothing was submitted")
        return 1

    commit = git_commit()
    params_hash = file_sha256(args.params)
    metrics = local_metrics(args.metrics)
    slugs = {"classification": params.kaggle.classification, "verification": params.kaggle.verification}
    failed = recorded = 0
    for task, file in files.items():
        slug = slugs[task]
        message = args.message or f"{task} {commit[:12] or 'no-git'} params {params_hash[:12]}"
        sha = file_sha256(file)
        try:
            with _quiet_client_success():
                ref = client.submit(file, slug, message)
        except KaggleError as err:
            log.error("%s: %s", file, err)
            failed += 1
            continue
        append_row(
            {
                "time": now(),
                "task": task,
                "competition": slug,
                "file": str(file),
                "sha256": sha,
                "message": message,
                "kaggle_ref": ref,
                "git_commit": commit,
                "params_sha256": params_hash,
                **metrics,
            },
            args.history,
        )
        recorded += 1
        local = metrics.get(LOCAL_METRIC[task])
        shown = f", local {LOCAL_METRIC[task]} {local:.4f}" if local is not None else ""
        print(f"submitted {file} to {slug}: ref {ref}{shown}")
        error = scoring_error(client, slug, ref)
        if error is not None:
            log.error("Kaggle failed to score submission %s (%s): %s", ref, file, error)
            failed += 1
    if recorded:
        print(f"recorded in {args.history} (commit it: it is the team's submission record)")
    if failed:
        log.error("%d of %d submissions failed; see above", failed, len(files))
        return 1
    print("run `python -m pipeline leaderboard` once Kaggle has scored them")
    return 0
