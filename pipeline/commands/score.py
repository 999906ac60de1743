"""`python -m pipeline score FILE`: score a submission against the local hidden answers, as Kaggle would.

Prints JSON: accuracy for classification; AUC (the leaderboard metric), EER and TAR@FAR for verification.
Hidden answers exist only for competitions this pipeline generated (synthetic or imagefolder sources).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import paths
from pipeline.commands.validate import TASKS, infer_task
from pipeline.params import PARAMS_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="submission CSV (classification.csv or verification.csv)")
    parser.add_argument("--task", choices=TASKS, help="default: inferred from the header")
    parser.add_argument(
        "--solution", type=Path, default=paths.SOLUTION, help="folder of the hidden answers (default: %(default)s)"
    )
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from pipeline import metrics
    from pipeline.params import load_params
    from pipeline.submission import score_classification, verification_labels_scores

    try:
        params = load_params(args.params, check_model=False)
        sub = params.submission
        task = args.task or infer_task(args.file, sub.classification_header, sub.verification_header)
        name = paths.CLASSIFICATION_SOLUTION.name if task == "classification" else paths.VERIFICATION_SOLUTION.name
        solution = args.solution / name
        if not solution.is_file():
            print(
                f"error: no hidden answers at {solution}: hidden answers exist only for synthetic/imagefolder "
                "competitions (for a Kaggle competition, submit and read the leaderboard instead)",
                file=sys.stderr,
            )
            return 1
        if task == "classification":
            result = {"accuracy": score_classification(args.file, solution, sub.classification_header)}
        else:
            labels, scores = verification_labels_scores(args.file, solution, sub.verification_header)
            result = metrics.verification_metrics(labels, scores, far=params.score.far)
            result["far"] = params.score.far
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"task": task, "file": str(args.file), "solution": str(solution), **result}, indent=2))
    return 0
