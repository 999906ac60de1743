"""What every stage entry point shares: logging, params loading and one clear line for a user error."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.params import PARAMS_FILE, Params, ParamsError, load_params, trace_reads

log = logging.getLogger("pipeline")
TRACE_ENV = "PIPELINE_PARAMS_TRACE"  # a folder: each stage writes the params keys it read there (tests/test_e2e.py)


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
        trace = os.environ.get(TRACE_ENV)
        reads = trace_reads() if trace else None
        try:
            fn(argv)
            if reads is not None:
                _write_trace(Path(trace), fn, reads)
        except (ParamsError, ValueError, OSError, RuntimeError) as err:
            if os.environ.get("PIPELINE_DEBUG"):
                raise
            log.error("%s: %s", type(err).__name__, err)
            log.error("(set PIPELINE_DEBUG=1 for the traceback)")
            return 1
        return 0

    return main


def _write_trace(folder: Path, fn: Callable, reads: set[str]) -> None:
    """The params keys this stage read, as `<module>.<pid>.json` in `folder` (one file per process)."""
    module = getattr(sys.modules[fn.__module__].__spec__, "name", fn.__module__)  # `python -m` runs as __main__
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.{os.getpid()}.json").write_text(json.dumps(sorted(reads)))


def run(main: Callable[[list[str] | None], int]) -> None:
    sys.exit(main(sys.argv[1:]))
