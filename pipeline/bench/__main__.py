"""python -m pipeline.bench: time the pipeline against the naive way and the machine's bounds, side by side.

Renders a competition-scale synthetic set once (cached under --cache), then prints one table: trial scoring,
data loading, training throughput, embedding extraction and indexing, each as a ratio to its baseline or
bound, with the machine it ran on. See docs/BENCH.md for what each row means.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path

BENCHES = ("scoring", "loading", "training", "embedding", "indexing")  # in the order; embedding reuses
# the model the training benchmark trained
SMALL_OVERRIDES = {"train": {"batch_size": 32}, "embed": {"batch_size": 128}}

log = logging.getLogger("pipeline.bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline bench", description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a tiny set and few steps: checks it runs, in seconds")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full competition (default: 1)")
    ap.add_argument("--cache", type=Path, default=Path("data/bench"), help="where the rendered set is kept")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: train.device from params (auto)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network in the bench's own loops")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes (first run only)")
    args = ap.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(args.only) - set(BENCHES))
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if not 0 < args.scale <= 1:
        ap.error(f"--scale must lie in (0, 1], got {args.scale}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    load_at_start = [round(x, 2) for x in os.getloadavg()]

    import torch

    from pipeline.bench import report
    from pipeline.bench.common import Context, with_overrides
    from pipeline.bench.dataset import SMALL_SCALE, prepare
    from pipeline.device import resolve_device
    from pipeline.params import ParamsError, load_params

    try:
        params = load_params(args.params)
        if args.small:
            params = with_overrides(params, SMALL_OVERRIDES)
        device = resolve_device(args.device or params.train.device)
    except (ParamsError, RuntimeError) as err:
        log.error("%s", err)
        return 1
    if load_at_start[0] > 0.8 * (os.cpu_count() or 1):
        log.warning("load average %s on %d cores: other work will disturb the figures", load_at_start, os.cpu_count())
    scale = SMALL_SCALE if args.small else args.scale
    data = prepare(args.cache, scale, params.data.image_size, seed=params.seed, workers=args.workers)
    rows: list[report.Row] = []
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.cache) as scratch:
        ctx = Context(
            params=params,
            device=device,
            data=data,
            small=args.small,
            compile=args.compile,
            scratch=Path(scratch),
            repeats=1 if args.small else 3,
        )
        for name in BENCHES:
            if name in args.only:
                log.info("benchmark: %s", name)
                rows += importlib.import_module(f"pipeline.bench.{name}").run(ctx)
    info = report.machine(device.type)
    info["load_average_start"] = load_at_start
    s = data.synth
    described = (
        f"{'--small' if args.small else f'--scale {scale:g}'}: {(s.identities + s.large_identities) * s.train_images:,}"
        f" training images of {s.identities + s.large_identities:,} identities, {s.val_trials:,} validation and "
        f"{s.test_trials:,} test trials, {params.data.image_size} px; model {params.model.name} "
        f"(width {params.model.width}), batch {params.train.batch_size}, {params.train.num_workers} loader worker(s)"
        + (", torch.compile" if args.compile else "")
    )
    print(report.format_table(rows, info, described))
    if args.out:
        report.write(args.out, rows, info, described)
    del torch
    return 0


if __name__ == "__main__":
    sys.exit(main())
