"""`python -m pipeline experiments`: which params won? One row per DVC experiment, best validation AUC first.

Runs `dvc exp show --json` and prints one compact table: the workspace, each baseline commit and each named
experiment (`dvc exp run`), with only the params that differ between them and the ensemble's validation
metrics from `metrics/ensemble.json` (val_auc, val_accuracy, val_eer), sorted by val_auc, highest first.
Queued, running and failed experiments are listed with their state and no metrics. Parsing is a pure function
of dvc's JSON (`rows`), so `--from-json FILE` prints the same table from a saved `dvc exp show --json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics/ensemble.json"
METRICS = ("val_auc", "val_accuracy", "val_eer")  # sorted by the first, highest first
PARAMS_FILE = "params.yaml"
MISSING = "-"


class ExperimentsError(RuntimeError):
    """`dvc exp show` failed or printed something that is not its JSON."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--all-commits", action="store_true", help="every commit's experiments (dvc exp show -A)")
    parser.add_argument("-n", "--num", type=int, help="experiments of the last NUM commits (dvc exp show -n)")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="read a saved `dvc exp show --json` instead")
    parser.add_argument("--metrics-file", default=METRICS_FILE, help="metrics file to show (default: %(default)s)")


def dvc_command() -> list[str]:
    """The project's dvc: the executable next to this interpreter, else `python -m dvc`."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def exp_show(extra: list[str], cwd: str | Path | None = None) -> list[dict[str, Any]]:
    """`dvc exp show --json` (plus `extra` options), parsed."""
    cmd = [*dvc_command(), "exp", "show", "--json", *extra]
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        raise ExperimentsError(f"could not run {' '.join(cmd)}: {err}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ExperimentsError(f"`dvc exp show --json` failed: {' / '.join(detail[-3:]) or f'exit {done.returncode}'}")
    try:
        data = json.loads(done.stdout or "[]")
    except json.JSONDecodeError as err:
        raise ExperimentsError(f"`dvc exp show --json` printed something that is not JSON ({err})") from None
    if not isinstance(data, list):
        raise ExperimentsError("`dvc exp show --json` printed JSON that is not a list of commits")
    return data


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys; lists stay whole (they are one value, e.g. folds.train)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return out


def _file_data(results: Any, path: str) -> dict[str, Any] | None:
    """The `data` of one file in dvc's {path: {"data": ...} | {"error": ...}} results; None if absent or failed."""
    if not isinstance(results, dict):
        return None
    entry = results.get(path)
    data = entry.get("data") if isinstance(entry, dict) else None
    return data if isinstance(data, dict) else None


def _state(state: dict[str, Any], kind: str, name: str, metrics_file: str, run_state: str) -> dict[str, Any]:
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    params: dict[str, Any] = {}
    for path in sorted((data.get("params") or {}) if isinstance(data.get("params"), dict) else {}):
        values = _file_data(data["params"], path)
        if values is not None:
            prefix = "" if path == PARAMS_FILE else f"{path}:"
            params.update({prefix + k: v for k, v in _flatten(values).items()})
    found = _file_data(data.get("metrics"), metrics_file) or {}
    metrics = {
        m: float(v)
        for m in METRICS
        if isinstance(v := found.get(m), int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    error = state.get("error")
    if isinstance(error, dict):
        run_state = "error: " + str(error.get("msg") or error.get("type") or "unknown")
    rev = str(state.get("rev") or "")
    return {
        "name": name,
        "rev": "" if rev == "workspace" else rev[:7],
        "kind": kind,
        "state": run_state,
        "params": params,
        "metrics": metrics,
    }


def rows(show: list[dict[str, Any]], metrics_file: str = METRICS_FILE) -> list[dict[str, Any]]:
    """One row per workspace, baseline commit and experiment in `dvc exp show --json` output, in its order.

    Each row: name, rev (7 hex digits; "" for the workspace), kind (workspace | baseline | experiment), state
    (success, queued, running, failed, or "error: ..." when DVC could not collect it), params (dotted keys of
    params.yaml; other params files as "file:key") and the METRICS found in `metrics_file`.
    """
    out: list[dict[str, Any]] = []
    for commit in show:
        if not isinstance(commit, dict):
            continue
        rev = str(commit.get("rev") or "")
        if rev == "workspace":
            out.append(_state(commit, "workspace", "workspace", metrics_file, "success"))
        else:
            out.append(_state(commit, "baseline", str(commit.get("name") or rev[:7]), metrics_file, "success"))
        for exp_range in commit.get("experiments") or []:
            revs = exp_range.get("revs") if isinstance(exp_range, dict) else None
            if not revs or not isinstance(revs[0], dict):
                continue
            tip = revs[0]  # the newest commit of the experiment's branch
            name = str(exp_range.get("name") or tip.get("name") or str(tip.get("rev") or "")[:7])
            executor = exp_range.get("executor")
            state = str(executor.get("state") or "success") if isinstance(executor, dict) else "success"
            out.append(_state(tip, "experiment", name, metrics_file, state))
    return out


def differing_params(table: list[dict[str, Any]]) -> list[str]:
    """The param keys whose value is not the same in every row that has params (a key some rows lack counts)."""
    with_params = [r["params"] for r in table if r["params"]]
    keys = sorted({k for p in with_params for k in p})
    sentinel = object()

    def differs(key: str) -> bool:
        values = [json.dumps(p.get(key, sentinel), sort_keys=True, default=repr) for p in with_params]
        return len(set(values)) > 1

    return [k for k in keys if differs(k)]


def ranked(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the first metric, highest first; then the rest in their original order."""
    first = METRICS[0]
    scored = sorted((r for r in table if first in r["metrics"]), key=lambda r: -r["metrics"][first])
    return scored + [r for r in table if first not in r["metrics"]]


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def format_table(table: list[dict[str, Any]]) -> str:
    """The ranked rows as aligned text: experiment, rev, the differing params, the metrics."""
    keys = differing_params(table)
    header = ["experiment", "rev", *keys, *METRICS]
    lines = [header]
    for r in ranked(table):
        name = r["name"] if r["state"] == "success" else f"{r['name']} ({r['state']})"
        params = [_cell(r["params"][k]) if k in r["params"] else MISSING for k in keys]
        metrics = [f"{r['metrics'][m]:.4f}" if m in r["metrics"] else MISSING for m in METRICS]
        lines.append([name, r["rev"] or MISSING, *params, *metrics])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = set(range(len(header) - len(METRICS), len(header)))

    def fmt(line: list[str]) -> str:
        cells = [v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths), *(fmt(line) for line in lines[1:])])


def summary(table: list[dict[str, Any]], metrics_file: str = METRICS_FILE) -> str:
    """One line naming the winner (and how to bring it into the workspace), or why there is none."""
    first = METRICS[0]
    best = ranked(table)[0] if table else None
    if best is None or first not in best["metrics"]:
        return f"no {first} in {metrics_file} yet: run `dvc repro` or `dvc exp run`"
    line = f"best {first}: {best['name']} ({best['metrics'][first]:.4f})"
    if best["kind"] == "experiment":
        line += f"; `dvc exp apply {best['name']}` brings its params and outputs into the workspace"
    return line


def main(args: argparse.Namespace) -> int:
    extra = ["--all-commits"] * bool(args.all_commits) + (["-n", str(args.num)] if args.num is not None else [])
    try:
        if args.from_json:
            show = json.loads(args.from_json.read_text(encoding="utf-8"))
        else:
            show = exp_show(extra)
        table = rows(show, args.metrics_file)
    except (ExperimentsError, OSError, ValueError, AttributeError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not table:
        print("no experiments: `dvc exp run -S key=value` runs one")
        return 0
    print(format_table(table))
    print(summary(table, args.metrics_file))
    return 0
