"""`python -m pipeline study`: a params change measured on a real face set over several seeds, mean and spread.

A default changes only on evidence that is not one lucky run (issue #15): this command turns a folder of real faces
(`<identity>/<image>`, e.g. ../shared/data/lfw158/images) into a competition with `data.source: imagefolder`, once
per seed runs the whole `dvc repro` in a working copy of the project's last commit (one per study name, split and
seed, beside the project: `../<project>-study/...`), scores both submissions against the hidden answers, and
appends one row per run to a CSV. Variants that touch only the stages after training (`--rescore score.whiten=true`,
`classify.*`, `embed.scales`) are scored on the same models right after, so such a change costs seconds or minutes,
not a retraining.

    python -m pipeline study --name stem4 --data ../shared/data/lfw158/images --split-seed 11785 \
        --seeds 0 1 2 -S model.stem_stride=4 --rescore score.whiten=true
    python -m pipeline study --summary        # mean +- standard deviation per study, set and variant
    python -m pipeline study --summary --versus default:score.whiten=True   # and paired with those runs

A working copy left by an interrupted run is reused: `dvc repro` skips finished stages and training resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

RESULTS = Path("docs/study.csv")
FIELDS = (
    "name",
    "variant",
    "data",
    "split_seed",
    "seed",
    "val_auc",
    "val_accuracy",
    "test_auc",
    "test_accuracy",
    "fold_aucs",
    "repro_s",
    "commit",
    "keys",
)
# The real-face protocol of the README's "Real faces" table: 64 px, LFW's loose crop tightened to the face.
BASE_KEYS = {"data.source": "imagefolder", "data.image_size": 64, "imagefolder.center_crop": 0.48}
METRICS = ("val_auc", "val_accuracy", "test_auc", "test_accuracy")


def key_value(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (`3` is an int, `[0]` a list, `true` a bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key.strip(), yaml.safe_load(value)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the study's name: its working copies and rows carry it")
    parser.add_argument("--data", type=Path, help="an <identity>/<image> folder of real faces")
    parser.add_argument("--split-seed", type=int, default=11785, help="imagefolder.seed: which people take which role")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the `seed` key of each run")
    parser.add_argument("-S", "--set", dest="keys", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--rescore",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variant of the stages after training (score.*, classify.*, embed.scales) scored on the same models "
        "(repeat: each alone)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="CSV the rows go to (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, help="where the working copies go (default: ../<project>-study)")
    parser.add_argument("--summary", action="store_true", help="print mean +- sd of --results and stop")
    parser.add_argument(
        "--versus",
        type=versus_rows,
        metavar="NAME[:VARIANT]",
        help="with --summary: pair every other study's main runs with these rows of the same set, split and seed",
    )


def _run(cmd: list[str], cwd: Path) -> str:
    from pipeline.scale.run import environment  # `python` and `dvc` of this interpreter's environment first

    done = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def score(workdir: Path) -> dict[str, Any]:
    """Validation figures from metrics/ensemble.json, test figures from the hidden answers."""
    metrics = json.loads((workdir / "metrics/ensemble.json").read_text(encoding="utf-8"))
    test = {}
    for name, task in (("verification.csv", "auc"), ("classification.csv", "accuracy")):
        out = _run([sys.executable, "-m", "pipeline", "score", f"submissions/{name}"], workdir)
        test[f"test_{task}"] = json.loads(out)[task]
    folds = metrics.get("folds", {})
    return {
        "val_auc": metrics["val_auc"],
        "val_accuracy": metrics.get("val_accuracy", float("nan")),
        **test,
        "fold_aucs": " ".join(f"{folds[k]['val_auc']:.4f}" for k in sorted(folds)),
    }


def shown(keys: dict[str, Any]) -> str:
    """The keys a run set, as JSON, without `data.path` (the `data` column has it, relative to the project)."""
    return json.dumps({k: v for k, v in keys.items() if k != "data.path"})


def repro(workdir: Path, keys: dict[str, Any]) -> float:
    from pipeline.scale.workdir import write_params

    write_params(workdir, keys)
    start = time.perf_counter()
    _run(["dvc", "repro"], workdir)
    return time.perf_counter() - start


def append(results: Path, row: dict[str, Any]) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    new = not results.exists()
    with results.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):+.4f} +- {sd:.4f}" if values else "-"


def versus_rows(text: str) -> tuple[str, str]:
    """`NAME` or `NAME:VARIANT` (e.g. `default:score.whiten=True`): the rows other studies are paired with."""
    name, _, variant = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r} names no study")
    return name, variant or "-"


def _paired(pairs: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    return ", ".join(f"{m} {_mean_sd([float(r[m]) - float(b[m]) for r, b in pairs])}" for m in METRICS)


def summarise(results: Path, versus: tuple[str, str] | None = None) -> list[str]:
    """One line per (name, variant, set, split): mean +- sample standard deviation of each figure over its seeds; for
    a --rescore variant, also its paired difference from the same models' main run (the spread of the difference is
    what says whether a scoring change helps: the seeds' own spread is mostly the models').

    `versus` (study, variant): every other study's main runs are also paired with that study's rows of the same set,
    split and seed (a training change against the defaults: same people, same seed, another recipe)."""
    with results.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    base = {(r["name"], r["data"], r["split_seed"], r["seed"]): r for r in rows if r["variant"] == "-"}
    other = {}
    if versus is not None:
        other = {(r["data"], r["split_seed"], r["seed"]): r for r in rows if (r["name"], r["variant"]) == versus}
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["name"], row["variant"], row["data"], row["split_seed"]), []).append(row)
    lines = []
    for (name, variant, data, split), members in groups.items():
        parts = [f"{m} {_mean_sd([float(r[m]) for r in members]).lstrip('+')}" for m in METRICS]
        seeds = ",".join(r["seed"] for r in members)
        lines.append(f"{name} [{variant}] {Path(data).parent.name}/{split} seeds {seeds}: " + ", ".join(parts))
        paired = [(r, base.get((name, data, split, r["seed"]))) for r in members] if variant != "-" else []
        paired = [(r, b) for r, b in paired if b is not None]
        if paired:
            lines.append(f"  minus the same models' main run ({len(paired)} paired): " + _paired(paired))
        if versus is not None and variant == "-" and name != versus[0]:
            against = [(r, other.get((data, split, r["seed"]))) for r in members]
            against = [(r, b) for r, b in against if b is not None]
            if against:
                label = f"{versus[0]} [{versus[1]}]"
                lines.append(f"  minus {label}, same seeds ({len(against)} paired): " + _paired(against))
    return lines


def check_keys(project: Path, keys: dict[str, Any]) -> None:
    """Validate `keys` on the project's params.yaml in memory, before any working copy is made.

    Raises:
        ParamsError / ParamsEditError: naming the key.
    """
    from pipeline.params import PARAMS_FILE, parse_params
    from pipeline.params_edit import set_keys

    text = set_keys((project / PARAMS_FILE).read_text(encoding="utf-8"), keys, f"{PARAMS_FILE} with the study's keys")
    parse_params(yaml.safe_load(text), f"{PARAMS_FILE} with the study's keys", check_model=True)


def run_seed(args: argparse.Namespace, project: Path, keys: dict[str, Any], seed: int) -> None:
    """One `dvc repro` in the seed's working copy, then each --rescore variant on its models; a row each."""
    from pipeline.params import PARAMS_FILE
    from pipeline.scale.workdir import prepare

    work = prepare(
        project, (args.workdir or project.parent / f"{project.name}-study") / f"{args.name}-{args.split_seed}-{seed}"
    )
    run_keys = {**keys, "seed": seed}
    log.info("%s split %d seed %d: dvc repro in %s", args.name, args.split_seed, seed, work.path)
    seconds = repro(work.path, run_keys)
    # the folder as seen from the project (the CSV is committed: no machine's absolute path in it)
    common = {"name": args.name, "data": os.path.relpath(keys["data.path"], project), "split_seed": args.split_seed}
    common.update(seed=seed, commit=work.commit[:7])
    row = {**common, "variant": "-", **score(work.path), "repro_s": round(seconds), "keys": shown(run_keys)}
    append(args.results, row)
    log.info("%s", {k: row[k] for k in METRICS})
    params_file = work.path / PARAMS_FILE
    main_params = params_file.read_text(encoding="utf-8")
    try:
        for key, value in args.rescore:
            # each variant alone: the main run's params first, so no earlier variant's key carries over
            params_file.write_text(main_params, encoding="utf-8")
            variant_keys = {**run_keys, key: value}
            seconds = repro(work.path, variant_keys)
            row = {**common, "variant": f"{key}={value}", **score(work.path), "repro_s": round(seconds)}
            append(args.results, {**row, "keys": shown(variant_keys)})
            log.info("%s=%s: %s", key, value, {k: row[k] for k in METRICS})
    finally:
        params_file.write_text(main_params, encoding="utf-8")  # the copy's params say what its models are


def main(args: argparse.Namespace) -> int:
    from pipeline.params import ParamsError
    from pipeline.params_edit import ParamsEditError
    from pipeline.scale.workdir import WorkdirError, project_root

    if args.versus and not args.summary:
        print("error: --versus goes with --summary", file=sys.stderr)
        return 2
    if args.summary:
        print("\n".join(summarise(args.results, args.versus)))
        return 0
    if not args.name or not args.data:
        print("error: --name and --data are needed (or --summary)", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"error: --data {args.data} is not a folder", file=sys.stderr)
        return 2
    project = project_root(Path.cwd())
    keys = {**BASE_KEYS, "data.path": str(args.data.resolve()), "imagefolder.seed": args.split_seed, **dict(args.keys)}
    try:
        for key, value in [("seed", args.seeds[0]), *args.rescore]:
            check_keys(project, {**keys, key: value})
        for seed in args.seeds:
            run_seed(args, project, keys, seed)
    except (ParamsError, ParamsEditError, WorkdirError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
