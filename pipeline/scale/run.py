"""The scale run itself: working copy, params, every stage measured in `dvc repro`'s order, the no-op repro, disk,
metrics, report. `pipeline.commands.scale` parses the options and calls `run_scale`."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.io import check_free_space, write_json, write_text
from pipeline.params import PARAMS_FILE, load_params
from pipeline.scale import report as rep
from pipeline.scale import sizes, workdir
from pipeline.scale.measure import Measured, disk_usage, run_measured

INTERRUPTED = 130
REPORT_NAME = "report"  # <workdir>/scale/report.md and report.json
RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
PROGRESS_EVERY_S = 60.0  # a line per minute while a stage runs
# Disk a full-size run needs, as a multiple of the rendered JPEGs: the decoded arrays (~0.8x at 32 px), the index,
# DVC's cache copies of the cached outputs, models and embeddings (docs/SCALE.md); checked before rendering.
DISK_FACTOR = 3.0


class ScaleError(RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


def environment() -> dict[str, str]:
    """The stages run `python` and `dvc` from this interpreter's environment (as `make repro` does)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    return env


def stage_order(path: Path, env: dict[str, str]) -> list[str]:
    """The stages in the order `dvc repro` runs them (its dry run of a forced repro lists every one)."""
    done = subprocess.run(
        ["dvc", "repro", "--dry", "--force"], cwd=path, env=env, capture_output=True, text=True, check=False
    )
    stages = RUNNING.findall(done.stdout)
    if done.returncode != 0 or not stages:
        raise ScaleError(f"`dvc repro --dry --force` in {path} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return stages


def stage_outputs(path: Path, stage: str) -> list[Path]:
    """The outputs dvc.lock records for `stage` (metrics and plots included)."""
    lock = yaml.safe_load((path / "dvc.lock").read_text(encoding="utf-8")) or {}
    outs = lock.get("stages", {}).get(stage, {}).get("outs", [])
    return [path / o["path"] for o in outs]


def _log_tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([s for s in text.splitlines() if s.strip()][-lines:])


def _progress(stage: str):
    def show(elapsed: float, pss: int, last: str) -> None:
        print(f"    {stage}: {rep.duration(elapsed)}, {rep.size(pss)} in use; {last[:140]}", flush=True)

    return show


def run_stage(path: Path, stage: str, env: dict[str, str], logs: Path) -> tuple[rep.StageRow, Path]:
    log = logs / f"{stage}.log"
    m: Measured = run_measured(
        ["dvc", "repro", "--single-item", stage], path, env, log, _progress(stage), PROGRESS_EVERY_S
    )
    text = log.read_text(encoding="utf-8", errors="replace")
    status = "failed" if m.returncode else "skipped" if stage in SKIPPED.findall(text) else "ran"
    outputs = disk_usage(stage_outputs(path, stage)) if status != "failed" else 0
    return rep.StageRow(stage, status, m.wall_s, m.max_rss, m.peak_tree, outputs, m.written), log


def run_noop(path: Path, env: dict[str, str], logs: Path) -> rep.NoopRow:
    log = logs / "second-repro.log"
    m = run_measured(["dvc", "repro"], path, env, log, _progress("dvc repro"), PROGRESS_EVERY_S)
    if m.returncode:
        raise ScaleError(f"the second `dvc repro` failed ({log}):\n{_log_tail(log)}")
    return rep.NoopRow(m.wall_s, RUNNING.findall(log.read_text(encoding="utf-8", errors="replace")), m.max_rss)


def disk_figures(path: Path) -> dict[str, int]:
    everything = [p for p in path.iterdir() if p.name != ".git"]
    return {
        "raw": disk_usage([path / "data" / "raw"]),
        "decoded": disk_usage([path / "data" / "decoded"]),
        "dvc_cache": disk_usage([path / ".dvc" / "cache"]),
        "workdir": disk_usage(everything),
    }


def metric_figures(path: Path) -> dict[str, Any]:
    m = json.loads((path / "metrics" / "ensemble.json").read_text(encoding="utf-8"))
    ran = []
    for name in m.get("folds", {}):  # the folds this run trained (dvclive/ may hold others, from the commit)
        fold = json.loads((path / "dvclive" / name / "metrics.json").read_text(encoding="utf-8"))
        ran.append(f"{name}: {fold.get('epochs', '?')} epochs, {fold.get('steps', '?')} steps")
    return {
        "val_auc": m["val_auc"],
        "val_accuracy": m["val_accuracy"],
        "val_eer": m["val_eer"],
        "fold_auc": {k: v["val_auc"] for k, v in m.get("folds", {}).items()},
        "training": "; ".join(ran) or "n/a",
    }


def summary_figures(path: Path, env: dict[str, str]) -> list[str]:
    """The figure lines of `python -m pipeline summary` (submissions, validation, hidden test answers)."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "summary"], cwd=path, env=env, capture_output=True, text=True, check=False
    )
    return [line for line in done.stdout.splitlines() if line.startswith(("submissions:", "validation:", "test"))]


SUBMISSIONS = ("submissions/classification.csv", "submissions/verification.csv")


def validate_submissions(path: Path, env: dict[str, str]) -> list[rep.Validation]:
    """`python -m pipeline validate` of each submission, as a user checks one before uploading it."""
    checks = []
    for name in SUBMISSIONS:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "validate", name], cwd=path, env=env, capture_output=True, text=True
        )
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
        checks.append(rep.Validation(name, done.returncode == 0, said[0], time.perf_counter() - start))
    return checks


def machine(path: Path) -> dict[str, Any]:
    from pipeline.bench.report import machine as bench_machine
    from pipeline.device import resolve_device

    try:
        device = resolve_device(load_params(path / PARAMS_FILE, check_model=False).train.device).type
    except RuntimeError:
        device = "cpu"  # CUDA asked for and absent: the train stage will say so
    info = bench_machine(device)
    info["load_average_start"] = info.pop("load_average")
    return info


def describe(path: Path) -> str:
    """What this run renders and trains, in words."""
    p = load_params(path / PARAMS_FILE, check_model=False)
    s, t = p.synthetic, p.train
    training = (s.identities + s.large_identities) * s.train_images
    epochs, per_epoch = sizes.fold_plan(p)
    rule = f"train.epochs {t.epochs}" if t.epochs != "auto" else f"train.steps {t.steps:,}, epochs: auto"
    return (
        f"{training:,} training images of {s.identities + s.large_identities:,} identities, {s.val_trials:,} "
        f"validation and {s.test_trials:,} test trials, {p.data.image_size} px; {p.model.name} width {p.model.width}, "
        f"batch {t.batch_size}; per fold {epochs} epoch(s) x {per_epoch:,} steps ({rule}); folds {p.folds.train}"
    )


def earlier_figures(folder: Path) -> dict[str, rep.StageRow]:
    """What an earlier run of this working copy measured, for the stages it finished."""
    try:
        return rep.earlier_rows(json.loads((folder / f"{REPORT_NAME}.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def write_report(report: rep.ScaleReport, folder: Path) -> Path:
    md = folder / f"{REPORT_NAME}.md"
    write_text(md, rep.markdown(report))
    write_json(folder / f"{REPORT_NAME}.json", report.to_json())
    return md


def run_stages(
    path: Path, stages: list[str], env: dict[str, str], report: rep.ScaleReport, folder: Path, started: float
) -> int | None:
    """Each stage measured in turn, its row added to `report`; None when all ran, else the exit status (the partial
    report written, and what to do next printed)."""
    logs = folder / "logs"
    earlier = earlier_figures(folder)
    for i, stage in enumerate(stages, start=1):
        print(f"[{i}/{len(stages)}] {stage}: running (output: {logs / (stage + '.log')})", flush=True)
        try:
            row, log = run_stage(path, stage, env, logs)
        except KeyboardInterrupt:
            report.wall_s = time.perf_counter() - started
            write_report(report, folder)
            print(
                f"interrupted in {stage}: run the same command again to go on (finished stages are skipped, "
                "training resumes from its last epoch checkpoint)",
                file=sys.stderr,
            )
            return INTERRUPTED
        if row.status == "skipped" and stage in earlier:  # an interrupted run resumed: keep what it measured
            row = earlier[stage]
        report.stages.append(row)
        print(rep.stage_line(i, len(stages), row), flush=True)
        if row.status == "failed":
            report.wall_s = time.perf_counter() - started
            md = write_report(report, folder)
            print(f"{stage} failed; its output ends ({log}):\n{_log_tail(log)}\npartial report: {md}", file=sys.stderr)
            return 1
    return None


def run_scale(args: argparse.Namespace) -> int:
    from pipeline import recipes
    from pipeline.stages.download import synthetic_bytes

    started = time.perf_counter()
    project = workdir.project_root(args.project)
    path = (args.workdir or workdir.default_workdir(project)).absolute()
    dirty = workdir.uncommitted_sources(project)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        print(f"note: the working copy is a clone of the last commit; uncommitted changes are not in it: {shown}")
    wd = workdir.prepare(project, path)
    how = "reusing it: finished stages are skipped" if wd.reused else f"cloned from {project}"
    print(f"working copy: {wd.path} (commit {wd.commit[:7]}; {how})", flush=True)

    settings = sizes.parse_settings(args.settings)
    recipe = recipes.load_recipe(recipes.recipe_path(args.recipe, project / recipes.RECIPES_DIR)) if args.recipe else {}
    image_size = (
        settings.get("data.image_size") or load_params(wd.path / PARAMS_FILE, check_model=False).data.image_size
    )
    keys = sizes.run_keys(args.scale, args.tiny, image_size, args.train_steps, args.epochs, recipe, settings)
    changed = workdir.write_params(wd.path, keys)
    problem = sizes.budget_problem(load_params(wd.path / PARAMS_FILE, check_model=False))
    if problem:  # the train stage would refuse it, after the render, index and decode
        raise ScaleError(f"{problem} ({wd.path / PARAMS_FILE} is written; nothing ran)")
    title = describe(wd.path)
    print(f"params: {len(changed)} keys changed in {wd.path / PARAMS_FILE}: {title}", flush=True)
    for key, old, new in changed:
        print(f"    {key}: {old!r} -> {new!r}")
    env = environment()
    stages = stage_order(wd.path, env)
    print(f"stages, in dvc repro's order: {', '.join(stages)}", flush=True)
    if args.dry_run:
        print(f"dry run: nothing ran; run it with the same options without --dry-run (the working copy is {wd.path})")
        return 0
    check_free_space(
        wd.path, int(DISK_FACTOR * synthetic_bytes(load_params(wd.path / PARAMS_FILE).synthetic)), "the run"
    )

    folder, logs = wd.path / workdir.REPORT_DIR, wd.path / workdir.REPORT_DIR / "logs"
    report = rep.ScaleReport(title, str(wd.path), wd.commit, machine(wd.path), keys)
    status = run_stages(wd.path, stages, env, report, folder, started)
    if status is not None:
        return status
    print("second dvc repro, nothing changed: ...", flush=True)
    report.noop = run_noop(wd.path, env, logs)
    report.disk = disk_figures(wd.path)
    report.metrics = metric_figures(wd.path)
    report.summary = summary_figures(wd.path, env)
    report.validated = validate_submissions(wd.path, env)
    report.wall_s = time.perf_counter() - started
    md = write_report(report, folder)
    print()
    print(rep.markdown(report))
    print(f"written: {md} and {md.with_suffix('.json')}")
    return 0
