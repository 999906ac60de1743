"""What every stage entry point shares: logging, params loading and one clear line for a user error."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable

from pipeline.params import PARAMS_FILE, Params, ParamsError, load_params

log = logging.getLogger("pipeline")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    return p


def params_from(args: argparse.Namespace) -> Params:
    return load_params(args.params)


def stage(fn: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], int]:
    """Wrap a stage's main: user errors (bad params, data, files) end with one message and exit status 1."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        try:
            fn(argv)
        except (ParamsError, ValueError, OSError, RuntimeError) as err:
            if os.environ.get("PIPELINE_DEBUG"):
                raise
            log.error("%s: %s", type(err).__name__, err)
            log.error("(set PIPELINE_DEBUG=1 for the traceback)")
            return 1
        return 0

    return main


def run(main: Callable[[list[str] | None], int]) -> None:
    sys.exit(main(sys.argv[1:]))
