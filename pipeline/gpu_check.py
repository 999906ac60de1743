"""`python -m pipeline.gpu_check` (`make gpu-check`): is this CUDA machine ready for the competition recipe? In minutes.

On the device asked for (CUDA unless `--device cpu`) it runs, printing images/s for each:

1. a one-process NCCL process group (gloo on a CPU): init, all_reduce, barrier, destroy;
2. the train stage's own loop (`pipeline.engine.build` and `run_epoch`: memmap loader, albumentations, autocast,
   EMA, clipping) for two epochs of `--steps` steps in each setting: fp16 + GradScaler and bf16, channels_last on
   and off, torch.compile on and off; the rate is the second epoch's (the first pays for workers, cuDNN's
   algorithm search and compilation);
3. embedding (`pipeline.inference.infer`) in fp32, fp16 and bf16, with the validation AUC each gives;
4. the bench's training and embedding rows (`python -m pipeline.bench --only training,embedding --device ...`).

The params are `params.yaml` with the competition recipe applied (`--recipe none`: params.yaml alone), on a
competition-shaped synthetic set rendered once under `--cache` (the bench's, shared with step 4). CUDA asked for
and absent is an error, never a skip: the command stops at once with exit status 1, naming what it found. A check
that fails is reported in the table and the command exits 1 after the others ran. `--device cpu --tiny` runs the
same flow on a CPU in about a minute (what the tests run).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

log = logging.getLogger("pipeline.gpu_check")

TARGET_S = 300.0  # the whole check, on a CUDA machine
BENCH_TRAIN_STEPS = 100  # pipeline.bench.training's steps per epoch on a full (not --small) run
TINY_STEPS = 3
TINY_OVERRIDES = {"train": {"batch_size": 32, "num_workers": 0}, "embed": {"batch_size": 128}}
CHECKS = ("process_group", "train", "embed", "bench")


class GpuCheckError(RuntimeError):
    """The check cannot run here (CUDA asked for and absent, or a setting this machine lacks)."""


@dataclass(frozen=True)
class Variant:
    """One training setting: autocast dtype (None = fp32), memory format, torch.compile."""

    name: str
    amp_dtype: str | None  # "float16" (with GradScaler) | "bfloat16" | None
    channels_last: bool
    compile: bool


CUDA_VARIANTS = (
    Variant("fp16 + GradScaler, channels_last", "float16", True, False),
    Variant("bf16, channels_last", "bfloat16", True, False),
    Variant("fp16 + GradScaler, NCHW", "float16", False, False),
    Variant("fp16 + GradScaler, channels_last, torch.compile", "float16", True, True),
    Variant("bf16, channels_last, torch.compile", "bfloat16", True, True),
)
CPU_VARIANTS = (  # no fp16 on a CPU (no scaler there: pipeline.device.amp_dtype refuses it)
    Variant("bf16, channels_last", "bfloat16", True, False),
    Variant("fp32, channels_last", None, True, False),
    Variant("bf16, NCHW", "bfloat16", False, False),
    Variant("bf16, channels_last, torch.compile", "bfloat16", True, True),
)


def cuda_missing_message() -> str:
    """Why CUDA is not there, from what torch and the machine say."""
    import torch

    built = torch.version.cuda
    smi = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        "CUDA was asked for but torch.cuda.is_available() is False: "
        f"torch {torch.__version__} {'built with CUDA ' + built if built else 'is a CPU-only build'}, "
        f"{torch.cuda.device_count()} CUDA device(s) visible"
        + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
        + f", nvidia-smi {'at ' + smi if smi else 'not found'}. Run it on a machine with an NVIDIA GPU and a CUDA "
        "build of torch, or pass --device cpu for the CPU rehearsal of the same checks."
    )


def require_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise GpuCheckError(cuda_missing_message())
    return torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device("cpu")


def load_check_params(params_file: Path, recipe: str | None, device_type: str, tiny: bool):
    """params.yaml with the recipe applied and the check's own settings: the device, and --tiny's sizes."""
    import yaml

    from pipeline import recipes
    from pipeline.bench.common import with_overrides
    from pipeline.params import parse_params
    from pipeline.params_edit import merge, nest

    raw = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    if recipe:
        path = recipes.recipe_path(recipe, params_file.parent / recipes.RECIPES_DIR)
        raw = merge(raw, nest(recipes.load_recipe(path)))
    params = parse_params(raw, f"{params_file} with recipe {recipe}" if recipe else str(params_file))
    overrides = merge(TINY_OVERRIDES if tiny else {}, {"train": {"device": device_type}})
    return with_overrides(params, overrides)


def set_scale(batch: int, steps: int) -> float:
    """The smallest fraction of the competition (rounded up to 0.01) with the images both the check's training
    (`steps` x `batch`, any identity) and the bench's training row (101 batches of medium identities) need."""
    from pipeline.bench.dataset import FULL

    medium = FULL["identities"] * FULL["train_images"]
    everything = (FULL["identities"] + FULL["large_identities"]) * FULL["train_images"]
    need = max((BENCH_TRAIN_STEPS + 1) * batch / medium, steps * batch / everything) * 1.05
    return min(1.0, math.ceil(need * 100) / 100)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_group_check(device) -> float:
    """Seconds to bring up a one-process group (NCCL on CUDA, gloo on CPU), all_reduce and tear it down."""
    import torch
    import torch.distributed as dist

    from pipeline.bench.common import sync

    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise GpuCheckError(f"this torch build ({torch.__version__}) has no NCCL")
    start = time.perf_counter()
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{_free_port()}",
        rank=0,
        world_size=1,
        timeout=timedelta(minutes=2),
        **kwargs,
    )
    try:
        x = torch.ones(1 << 20, device=device)
        dist.all_reduce(x)
        dist.barrier()
        sync(device)
        if not bool((x == 1).all()):
            raise GpuCheckError(f"{backend} all_reduce over one process changed the tensor")
    finally:
        dist.destroy_process_group()
    return time.perf_counter() - start


def train_rate(params, variant: Variant, data, rows, labels, n_classes: int, device, scratch: Path):
    """Images/s of the train stage's loop (second of two epochs over `rows`) in `variant`; the EMA model and the
    second epoch's mean loss."""
    import torch

    from pipeline import augment, engine
    from pipeline.bench.common import sync, with_overrides

    cfg = with_overrides(
        params,
        {
            "train": {
                "amp": variant.amp_dtype is not None,
                "amp_dtype": variant.amp_dtype or "auto",
                "channels_last": variant.channels_last,
                "epochs": 2,
                "warmup_epochs": 0.0,
                "verification_eval": False,
            }
        },
    )
    train_data = engine.TrainData(data.array("train"), rows, labels[rows], n_classes, augment.build(cfg.augment))
    run = engine.build(cfg, train_data, scratch, seed=0, fingerprint="gpu-check", init=None, prefix="train")
    if variant.compile:  # after TrainStep made the EMA copy, as the bench does: the copy stays a plain module
        run.model.net = torch.compile(run.model.net)
    try:
        engine.run_epoch(run, 0, seed=0)  # warm-up: workers, cuDNN's algorithm search, compilation
        sync(device)
        start = time.perf_counter()
        row = engine.run_epoch(run, 1, seed=0)
        sync(device)
        seconds = time.perf_counter() - start
    finally:
        engine.stop_workers(run.loader)
    images = run.budget.steps_per_epoch * cfg.train.batch_size
    return images / seconds, run.final.eval(), row["train_loss"]


def embed_rates(model, data, params, device, repeats: int) -> list[tuple[str, float, float]]:
    """(dtype name, images/s over the test verification images, validation AUC) for fp32 and each low precision."""
    import torch

    from pipeline import metrics
    from pipeline.bench.common import best_of
    from pipeline.device import dtype_name
    from pipeline.inference import infer
    from pipeline.scoring import trial_scores
    from pipeline.trial_files import read_trial_manifest

    ep = params.embed
    kw = dict(device=device, batch_size=ep.batch_size, flip_tta=ep.flip_tta, channels_last=params.train.channels_last)
    images = data.array("test_verification")
    val_images, names = data.array("val_verification"), data.manifest("val_verification")["name"].tolist()
    trials = read_trial_manifest(data.index, "val_trials")
    out = []
    for dtype in [None, torch.float16, torch.bfloat16] if device.type == "cuda" else [None, torch.bfloat16]:
        infer(model, images[: ep.batch_size], dtype=dtype, **kw)  # warm-up
        seconds, _ = best_of(lambda d=dtype: infer(model, images, dtype=d, **kw), repeats, device)
        emb, _ = infer(model, val_images, dtype=dtype, **kw)
        auc = metrics.roc_auc(trials["label"].to_numpy(), trial_scores(emb, names, trials))
        out.append((dtype_name(dtype), len(images) / seconds, auc))
    return out


def run_bench(device_type: str, params, cache: Path, scale: float, tiny: bool, scratch: Path) -> int:
    """The bench's training and embedding rows, as their own process (its table printed as it comes)."""
    import yaml

    params_file = scratch / "params.gpu-check.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "pipeline.bench", "--device", device_type, "--only", "training,embedding"]
    cmd += ["--cache", str(cache), "--params", str(params_file)]
    cmd += ["--small"] if tiny else ["--scale", f"{scale:g}"]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd)


class Checks:
    """The rows of one run. A check that raises becomes a failed row and the next check still runs: GPU time is
    scarce, so one failure should not hide what the others would show."""

    def __init__(self) -> None:
        from pipeline.bench.report import Row

        self.row_type = Row
        self.rows: list = []
        self.failures: list[str] = []

    def attempt(self, what: str, fn):
        try:
            return fn()
        except Exception as err:
            log.exception("%s failed", what)
            self.failures.append(f"{what}: {type(err).__name__}: {err}")
            self.add("failed", what, 0.0, "", note=f"{type(err).__name__}: {err}"[:300], met=False)
            return None

    def add(self, *args, **kwargs) -> None:
        self.rows.append(self.row_type(*args, **kwargs))


def check_process_group(checks: Checks, device) -> None:
    seconds = checks.attempt("process group", lambda: process_group_check(device))
    if seconds is not None:
        backend = "nccl" if device.type == "cuda" else "gloo"
        name = f"1-process {backend}: init, all_reduce, destroy"
        checks.add("process group", name, seconds, "s", met=True, note="init_process_group, world size 1")


def check_training(checks: Checks, params, data, device, steps: int, variants: tuple[Variant, ...], scratch: Path):
    """Each training setting's rate, as rows against the first; returns the first trained model (for embedding)."""
    import numpy as np

    batch = params.train.batch_size
    labels, n_classes = data.labels()
    rows = np.sort(np.random.default_rng(0).permutation(len(labels))[: steps * batch])
    model, first = None, None
    for i, variant in enumerate(variants):
        log.info("train stage, %s: 2 epochs x %d steps of %d", variant.name, steps, batch)
        result = checks.attempt(
            f"train stage, {variant.name}",
            lambda v=variant, i=i: train_rate(params, v, data, rows, labels, n_classes, device, scratch / str(i)),
        )
        if result is None:
            continue
        rate, trained, loss = result
        model = trained if model is None else model
        first = rate if first is None else first
        note = f"second epoch of {steps} steps x {batch}; loss {loss:.3f}"
        checks.add(
            "train stage", variant.name, rate, "img/s", first, variants[0].name, rate / first, "report",
            math.isfinite(loss), note,
        )  # fmt: skip
    return model


def check_embedding(checks: Checks, model, params, data, device, repeats: int) -> None:
    results = checks.attempt("embedding", lambda: embed_rates(model, data, params, device, repeats))
    images = len(data.array("test_verification"))
    for name, rate, auc in results or []:
        fp32_rate, fp32_auc = results[0][1], results[0][2]
        checks.add(
            "embedding", f"infer {name} (batch {params.embed.batch_size})", rate, "img/s", fp32_rate, "infer fp32",
            rate / fp32_rate, "AUC within 0.002 of fp32", abs(auc - fp32_auc) < 0.002,
            f"validation AUC {auc:.4f} (fp32 {fp32_auc:.4f}); {images:,} images",
        )  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default: cuda (absent: an error)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    ap.add_argument("--recipe", default="competition", help="recipe applied to the params; 'none' for params alone")
    ap.add_argument("--steps", type=int, default=150, help="training steps per epoch of each setting (2 epochs each)")
    ap.add_argument("--scale", type=float, help="fraction of the competition to render (default: what the steps need)")
    ap.add_argument("--cache", type=Path, default=Path("data/bench"), help="where the rendered set is kept")
    ap.add_argument("--skip", default="", help=f"comma-separated checks to leave out: {','.join(CHECKS)},compile")
    ap.add_argument("--tiny", action="store_true", help="a tiny set, batch 32, 3 steps: the CPU rehearsal")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {*CHECKS, "compile"}
    if unknown:
        ap.error(f"--skip: unknown check(s) {', '.join(sorted(unknown))}; choose from {','.join(CHECKS)},compile")
    if args.recipe == "none":
        args.recipe = None
    if args.tiny:
        args.steps = TINY_STEPS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    try:
        device = require_device(args.device)  # first: no rendering or training before a missing GPU is named
    except GpuCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from pipeline.bench import report
    from pipeline.bench.dataset import SMALL_SCALE, prepare
    from pipeline.params import ParamsError

    try:
        params = load_check_params(args.params, args.recipe, device.type, args.tiny)
    except (ParamsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tp = params.train
    scale = SMALL_SCALE if args.tiny else args.scale or set_scale(tp.batch_size, args.steps)
    info = report.machine(device.type)
    info["load_average_start"] = info["load_average"]
    log.info("device %s; %s width %g, batch %d, %d workers", device, params.model.name, params.model.width,
             tp.batch_size, tp.num_workers)  # fmt: skip
    data = prepare(args.cache, scale, params.data.image_size, seed=params.seed)
    if len(data.labels()[0]) < args.steps * tp.batch_size:
        print(f"error: the set at scale {scale:g} has fewer than {args.steps} x {tp.batch_size} training images: "
              "raise --scale", file=sys.stderr)  # fmt: skip
        return 1

    checks = Checks()
    if "process_group" not in args.skip:
        check_process_group(checks, device)
    model = None
    if not {"train", "embed"} <= args.skip:
        variants = CUDA_VARIANTS if device.type == "cuda" else CPU_VARIANTS
        variants = variants[:1] if "train" in args.skip else variants  # embedding still needs a trained model
        variants = tuple(v for v in variants if not (v.compile and "compile" in args.skip))
        with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.cache) as scratch:
            model = check_training(checks, params, data, device, args.steps, variants, Path(scratch))
    if "embed" not in args.skip and model is not None:
        check_embedding(checks, model, params, data, device, repeats=1 if args.tiny else 3)
    described = (
        f"gpu-check on {device}: params {args.params}" + (f" + recipe {args.recipe}" if args.recipe else "")
        + f"; {params.model.name} width {params.model.width:g}, batch {tp.batch_size}, {tp.num_workers} workers; "
        f"set scale {scale:g}"
    )  # fmt: skip
    print(report.format_table(checks.rows, info, described), flush=True)
    if args.out:
        report.write(args.out, checks.rows, info, described)
    if "bench" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="gpu-check-bench-") as scratch:
            status = run_bench(device.type, params, args.cache, scale, args.tiny, Path(scratch))
        if status != 0:
            checks.failures.append(f"the bench exited with status {status}")
    return finish(checks.failures, time.perf_counter() - started, device.type)


def finish(failures: list[str], elapsed: float, device_type: str) -> int:
    """The last line: passed or failed, in how long, against the 5-minute target on CUDA."""
    within = ""
    if device_type == "cuda":
        within = f" (target < {TARGET_S / 60:.0f} min: {'met' if elapsed < TARGET_S else 'NOT met'})"
    if failures:
        print(f"\ngpu-check FAILED after {elapsed:.0f} s{within}:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"\ngpu-check passed in {elapsed:.0f} s{within}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
