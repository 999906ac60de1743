"""`python -m pipeline <command>`: user-facing commands. DVC stages have their own modules in `stages/`.

Each command lives in `pipeline/commands/<name>.py` with `configure(parser)` and `main(args) -> int`;
modules are imported only when their command runs, so that e.g. `validate` works without kaggle credentials.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "validate": "check a submission CSV against the order/trial file before anything uploads it",
    "score": "score a submission against local hidden answers, as Kaggle would",
    "submit": "validate and upload submissions to Kaggle, recording each in submissions/history.csv",
    "leaderboard": "join Kaggle's scores of your submissions with the local validation metrics",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"pipeline.commands.{name}")
        module.configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    module = importlib.import_module(f"pipeline.commands.{args.command}")
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
