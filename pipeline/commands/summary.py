"""`python -m pipeline summary`: what the last run produced (submissions and row counts, validation and hidden test
figures) and the commands that usually come next; `make repro` ends with it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.params import PARAMS_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")
    parser.add_argument("--no-hidden", action="store_true", help="leave out the test figures from data/solution")


def main(args: argparse.Namespace) -> int:
    from pipeline.summary import summary_lines

    try:
        lines = summary_lines(Path("."), hidden=not args.no_hidden, params_file=args.params)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
