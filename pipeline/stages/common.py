"""What every stage entry point shares: logging, params loading, and one clear line for a user error or an interrupt.

Stage modules keep their heavy imports (torch, timm, albumentations, pandas, ...) inside `main`, after the
arguments are parsed, so `python -m pipeline.stages.<name> --help` answers at once (tests/test_stages_cli.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.params import PARAMS_FILE, Params, ParamsError, load_params, trace_reads

log = logging.getLogger("pipeline")
TRACE_ENV = "PIPELINE_PARAMS_TRACE"  # a folder: each stage writes the params keys it read there (tests/test_e2e.py)
INTERRUPTED = 130  # the exit status of a stage stopped by Ctrl-C (128 + SIGINT, as shells report it)


def parser(description: str, module: str) -> argparse.ArgumentParser:
    """The stage's argument parser; `module` (the stage's `__spec__.name`) names it in the usage line."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    return p


def params_from(args: argparse.Namespace, check_model: bool = True) -> Params:
    """The validated params file. `check_model=False` skips looking `model.name` up in timm, which imports torch and
    timm (about 5 s a stage on 2 cores): for the stages that build no model. The first stage (download) and every
    stage that builds one (source, train, embed) still check it, so a bad name fails before any work."""
    return load_params(args.params, check_model=check_model)


def stage(fn: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], int]:
    """Wrap a stage's main: user errors (bad params, data, files) end with one message and exit status 1; an
    interrupt (Ctrl-C) ends with one line saying what was kept and how to go on, and exit status 130."""

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
        except KeyboardInterrupt as err:  # the train stage's TrainingInterrupted names its checkpoint
            if os.environ.get("PIPELINE_DEBUG"):
                raise
            # CPython's `-m` runner ends with kill(SIGINT) (status -2, not ours) when a KeyboardInterrupt left an
            # exec()'d string (dataclasses and namedtuple build methods so, at import), even one caught since;
            # running one more exec() clears that mark.
            exec("pass")
            log.error("%s", str(err) or interrupted_line(_module(fn)))
            return INTERRUPTED
        return 0

    return main


def interrupted_line(module: str) -> str:
    """What an interrupted stage says: outputs are written whole or not at all (`pipeline.io`), so nothing of it
    stays behind half-written."""
    return (
        f"interrupted: {module} kept nothing half-written (outputs appear only when complete); "
        "run dvc repro (or make repro) again to run the stage again"
    )


def _module(fn: Callable) -> str:
    return getattr(sys.modules[fn.__module__].__spec__, "name", fn.__module__)  # `python -m` runs as __main__


def _write_trace(folder: Path, fn: Callable, reads: set[str]) -> None:
    """The params keys this stage read, as `<module>.<pid>.json` in `folder` (one file per process)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{_module(fn)}.{os.getpid()}.json").write_text(json.dumps(sorted(reads)))


def run(main: Callable[[list[str] | None], int]) -> None:
    status = main(sys.argv[1:])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a late Ctrl-C would only break exit hooks
    if status == INTERRUPTED:
        logging.disable(logging.CRITICAL)  # the interrupt's line stays the last: no library's exit hook logs after it
    sys.exit(status)
