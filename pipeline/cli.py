"""`python -m pipeline <command>`: user-facing commands. DVC stages have their own modules in `stages/`.

Each command lives in `pipeline/commands/<name>.py` with `configure(parser)` and `main(args) -> int`;
modules are imported only when their command runs, so that e.g. `validate` works without kaggle credentials.
Building the parser imports no torch, numpy or pandas: `--help` prints at once. `bench` is forwarded whole to
`python -m pipeline.bench` (its own options and help).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "summary": "what the last run produced: submissions with row counts, validation and test figures, next steps",
    "validate": "check a submission CSV against the order/trial file before anything uploads it",
    "score": "score a submission against local hidden answers, as Kaggle would",
    "submit": "validate and upload submissions to Kaggle, recording each in submissions/history.csv",
    "leaderboard": "join Kaggle's scores of your submissions with the local validation metrics",
    "experiments": "which params won: one row per DVC experiment, the params that differ, the ensemble metrics",
    "bench": "time the pipeline against the naive way and the machine's bounds (= python -m pipeline.bench)",
    "scale": "the whole dvc repro at the real competition's size in a working copy: time, memory, disk per stage",
    "study": "a params change on a real face set over several seeds (imagefolder runs in working copies): mean, spread",
    "recipe": "switch params.yaml to a recipe in one command (recipes/NAME.yaml, e.g. competition: the real size)",
}
# Commands whose arguments all go to another module's `main(argv)`, untouched (its own --help included).
FORWARDED = {"bench": "pipeline.bench.__main__"}

EPILOG = """\
examples:
  python -m pipeline summary                                   # after make repro: files, figures, next steps
  python -m pipeline validate submissions/verification.csv
  python -m pipeline score submissions/verification.csv        # synthetic/imagefolder competitions only
  python -m pipeline submit                                    # both files; or name one or both
  python -m pipeline submit submissions/verification.csv -m "arcface, 4 folds"
  python -m pipeline leaderboard
  python -m pipeline experiments                               # after `dvc exp run`
  python -m pipeline bench --small
  python -m pipeline scale --tiny                              # the competition-size run, rehearsed in a minute
  python -m pipeline recipe competition --dry-run              # what the GPU recipe changes in params.yaml
  python -m pipeline study --name base --data ../shared/data/lfw158/images --seeds 0 1 2
                                                               # real faces: 3 seeds, mean +- sd (--summary)

the pipeline itself: `dvc repro` (or `make repro`); `dvc exp run -S key=value` for an experiment.

a local Kaggle for dry runs (no account, nothing leaves the machine), serving this project's own
competition so that the submissions `make repro` wrote fit and score:
  python -m pipeline.testing.fake_kaggle --project . --lifetime 0      # until Ctrl-C
  # in another shell:
  export KAGGLE_API_ENVIRONMENT=LOCALHOST http_proxy=http://127.0.0.1:7777 no_proxy= \\
         KAGGLE_USERNAME=me KAGGLE_KEY=anything
  python -m pipeline submit && python -m pipeline leaderboard

`python -m pipeline <command> --help` shows a command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, help_text in COMMANDS.items():
        if name in FORWARDED:
            # Listed here for the help; `main` hands its arguments to the module before argparse sees them.
            sub.add_parser(name, help=help_text, description=help_text, add_help=False)
            continue
        module = importlib.import_module(f"pipeline.commands.{name}")
        module.configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _forwarded(argv: list[str]) -> tuple[str, list[str]] | None:
    """(module, its arguments) when the command in `argv` is forwarded whole, else None."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return (FORWARDED[arg], argv[i + 1 :]) if arg in FORWARDED else None
        if arg in ("-h", "--help"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    forwarded = _forwarded(argv)
    if forwarded is not None:
        module, rest = forwarded
        return int(importlib.import_module(module).main(rest) or 0)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    module = importlib.import_module(f"pipeline.commands.{args.command}")
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
