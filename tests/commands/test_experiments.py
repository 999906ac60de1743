"""`python -m pipeline experiments`: dvc's JSON parsed into one ranked row per experiment (no training anywhere).

`data/dvc_exp_show.json` is the real `dvc exp show --json` of DVC 3.67 in a throwaway repo whose one stage
writes metrics/ensemble.json from params.yaml: a baseline commit (master), two finished experiments (hi-lr,
wide), one queued one (no metrics), and a workspace whose params.yaml was edited after the last run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.commands import experiments as ex

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((Path(__file__).parent / "data" / "dvc_exp_show.json").read_text())


def test_rows_from_a_captured_dvc_exp_show() -> None:
    table = ex.rows(SAMPLE)
    assert [(r["name"], r["kind"], r["state"]) for r in table] == [
        ("workspace", "workspace", "success"),
        ("master", "baseline", "success"),
        ("wide", "experiment", "success"),
        ("hi-lr", "experiment", "success"),
        ("queued-one", "experiment", "queued"),
    ]
    by = {r["name"]: r for r in table}
    assert by["master"]["rev"] == "25b81c8" and by["workspace"]["rev"] == ""
    assert by["hi-lr"]["params"] == {
        "seed": 0,
        "train.lr": 0.01,
        "train.steps": 100,
        "model.name": "resnet18",
        "model.embedding_dim": 256,
    }
    assert by["hi-lr"]["metrics"] == {"val_auc": 0.91256, "val_accuracy": 0.86256, "val_eer": pytest.approx(0.08744)}
    assert by["queued-one"]["metrics"] == {}
    # Only the params that differ somewhere are columns; seed and model.name are the same everywhere.
    assert ex.differing_params(table) == ["model.embedding_dim", "train.lr", "train.steps"]


def test_table_is_ranked_by_val_auc_with_unscored_rows_last() -> None:
    text = ex.format_table(ex.rows(SAMPLE))
    lines = text.splitlines()
    assert lines[0].split() == [
        "experiment",
        "rev",
        "model.embedding_dim",
        "train.lr",
        "train.steps",
        "val_auc",
        "val_accuracy",
        "val_eer",
    ]
    assert set(lines[1]) == {"-", " "}
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["workspace", "wide", "hi-lr", "master", "queued-one"]
    assert lines[4].split() == ["hi-lr", "007183b", "256", "0.01", "100", "0.9126", "0.8626", "0.0874"]
    assert lines[-1].split() == ["queued-one", "(queued)", "0cd0e02", "512", "0.02", "100", "-", "-", "-"]
    assert ex.summary(ex.rows(SAMPLE)) == "best val_auc: workspace (0.9151)"


def test_errors_failed_runs_and_other_params_files() -> None:
    sample = copy.deepcopy(SAMPLE)
    master = sample[1]
    wide, hi_lr, _ = master["experiments"]
    hi_lr["revs"][0]["data"]["metrics"]["metrics/ensemble.json"]["data"]["val_auc"] = 0.99
    wide["executor"] = {"state": "failed", "name": None, "local": None}
    wide["revs"][0]["data"]["metrics"] = {}
    master["data"]["params"]["extra.yaml"] = {"data": {"k": [1, 2]}}
    sample.insert(1, {"rev": "a" * 40, "name": None, "data": None, "error": {"msg": "bad yaml", "type": "X"}})
    table = ex.rows(sample)
    by = {r["name"]: r for r in table}
    assert by["aaaaaaa"]["state"] == "error: bad yaml" and by["aaaaaaa"]["params"] == {}
    assert by["wide"]["state"] == "failed" and by["master"]["params"]["extra.yaml:k"] == [1, 2]
    assert "extra.yaml:k" in ex.differing_params(table)
    assert ex.ranked(table)[0]["name"] == "hi-lr"
    assert ex.summary(table) == (
        "best val_auc: hi-lr (0.9900); `dvc exp apply hi-lr` brings its params and outputs into the workspace"
    )
    text = ex.format_table(table)
    assert "aaaaaaa (error: bad yaml)" in text and "wide (failed)" in text and "[1, 2]" in text
    assert ex.summary([]).startswith("no val_auc")


def test_from_json_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import cli

    saved = tmp_path / "show.json"
    saved.write_text(json.dumps(SAMPLE))
    assert cli.main(["experiments", "--from-json", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("experiment") and out.rstrip().endswith("(0.9151)")
    saved.write_text("{not json")
    assert cli.main(["experiments", "--from-json", str(saved)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def _git(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@e"
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


def test_runs_the_projects_dvc(tmp_path: Path) -> None:
    """The real `dvc exp show --json` in a throwaway repo with committed params and metrics (no stage runs)."""
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    _git(["init", "-q", "-b", "main"], repo)
    done = subprocess.run([*ex.dvc_command(), "init", "-q"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.001}, "seed": 0}))
    (repo / "metrics" / "ensemble.json").write_text(json.dumps({"val_auc": 0.9, "val_accuracy": 0.8, "val_eer": 0.1}))
    stage = {"cmd": "true", "params": ["train"], "metrics": [{"metrics/ensemble.json": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ensemble": stage}}))
    _git(["add", "-A"], repo)
    _git(["commit", "-qm", "baseline"], repo)
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01}, "seed": 0}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "experiments"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["experiment", "rev", "train.lr", "val_auc", "val_accuracy", "val_eer"]
    assert [line.split()[0] for line in lines[2:4]] == ["workspace", "main"]
    assert lines[2].split()[2:] == ["0.01", "0.9000", "0.8000", "0.1000"]
    outside = subprocess.run(
        [sys.executable, "-m", "pipeline", "experiments"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert outside.returncode == 1 and "not inside of a DVC repository" in outside.stderr
