"""`python -m pipeline scale`: the whole `dvc repro` at the real competition's size, in a working copy, measured.

Clones the project's last commit into a working copy (default `../<project>-scale`), sets its params to the
full-size synthetic competition (the bench's spec: 2,300 + 2,000 training identities x 88 images, 100,000
validation and 900,000 test trials) with the training budget given, and runs every stage in `dvc repro`'s order,
one `dvc repro --single-item STAGE` each, so that each stage's wall time, peak memory and disk writes are its own.
Then a second `dvc repro` (nothing changed: it must run nothing, quickly), the disk use against the raw data, and
the validation AUC and accuracy. The table is printed and written to `<workdir>/scale/report.md` (and `.json`);
each stage's output goes to `<workdir>/scale/logs/STAGE.log`. Run again with the same --workdir to go on after an
interruption: finished stages are skipped and training resumes from its checkpoints. docs/SCALE.md has the method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  python -m pipeline scale                          # full size, ~1 h on 2 cores (make scale)\n"
        "  python -m pipeline scale --train-steps 3000       # full size, a shorter training budget\n"
        "  python -m pipeline scale --scale 0.1 --train-steps 600   # a tenth of the set: a rehearsal\n"
        "  python -m pipeline scale --recipe competition     # on a GPU machine: the competition recipe\n"
        "  python -m pipeline scale --tiny --workdir /tmp/scale-tiny   # the same flow in about a minute\n"
    )
    parser.add_argument("--workdir", type=Path, help="the working copy (default: ../<project>-scale)")
    parser.add_argument("--project", type=Path, default=Path("."), help="the project to clone (default: this one)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the real competition's identities and trials (default 1)"
    )
    size.add_argument("--tiny", action="store_true", help="a tiny set and one epoch: the same flow in about a minute")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--train-steps",
        type=int,
        help="optimiser steps per fold, rounded up to whole epochs (train.steps with train.epochs: auto; default "
        "2900 with train.warmup_epochs 0.25: one epoch of the full set at batch 128)",
    )
    budget.add_argument("--epochs", type=int, help="exactly this many epochs per fold (train.epochs)")
    parser.add_argument("--recipe", help="apply a params recipe first (recipes/NAME.yaml, e.g. competition on a GPU)")
    parser.add_argument(
        "-S",
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other params key, last (as dvc exp run -S): e.g. -S folds.train=[0] -S train.num_workers=2",
    )
    parser.add_argument("--dry-run", action="store_true", help="make the working copy and its params; run nothing")


def main(args: argparse.Namespace) -> int:
    from pipeline.params import ParamsError
    from pipeline.params_edit import ParamsEditError
    from pipeline.scale.run import ScaleError, run_scale
    from pipeline.scale.workdir import WorkdirError

    try:
        return run_scale(args)
    except (ScaleError, WorkdirError, ParamsError, ParamsEditError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
