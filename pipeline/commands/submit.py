"""`python -m pipeline submit`: validate the submission CSVs, upload them to Kaggle, record each in history.csv.

Both files are validated before anything is uploaded; each successful upload appends its row to
`submissions/history.csv` at once (time, git commit, params.yaml hash, local validation metrics, sha256,
message, Kaggle reference), so a failure on the second file never loses the record of the first.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import paths
from pipeline.params import PARAMS_FILE, Params

log = logging.getLogger(__name__)

TASKS = ("classification", "verification")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both", help="what to submit (default: both)")
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

    tasks = TASKS if args.task == "both" else (args.task,)
    files = {"classification": args.classification_file, "verification": args.verification_file}
    try:
        params = load_params(args.params, check_model=False)
        for task in tasks:
            n = validate(task, files[task], args.root, params)
            log.info("%s: %d rows, valid", files[task], n)
        client = KaggleClient()
    except (ValueError, OSError, KaggleError) as err:
        log.error("%s", err)
        log.error("nothing was submitted")
        return 1

    commit = git_commit()
    params_hash = file_sha256(args.params)
    metrics = local_metrics(args.metrics)
    slugs = {"classification": params.kaggle.classification, "verification": params.kaggle.verification}
    failed = 0
    for task in tasks:
        file, slug = files[task], slugs[task]
        message = args.message or f"{task} {commit[:12] or 'no-git'} params {params_hash[:12]}"
        sha = file_sha256(file)
        try:
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
        local = metrics.get(LOCAL_METRIC[task])
        shown = f", local {LOCAL_METRIC[task]} {local:.4f}" if local is not None else ""
        print(f"submitted {file} to {slug}: ref {ref}{shown}")
    if failed:
        log.error("%d of %d submissions failed; see above", failed, len(tasks))
        return 1
    print(f"recorded in {args.history}; run `python -m pipeline leaderboard` once Kaggle has scored them")
    return 0
