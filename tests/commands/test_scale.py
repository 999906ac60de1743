"""`python -m pipeline scale`: the params it writes, the measurements it takes, its table, and the whole flow at a
tiny size in a real working copy (a real `dvc repro`, stage by stage, then the no-op repro)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.bench.dataset import FULL
from pipeline.params import ParamsError
from pipeline.params_edit import flatten
from pipeline.scale import report as rep
from pipeline.scale import sizes, workdir
from pipeline.scale.measure import disk_usage, run_measured
from pipeline.scale.run import SUBMISSIONS, environment, stage_order
from tests.conftest import make_project, run

MIB = 2**20


# --- what is rendered and trained ---------------------------------------------------------------------------------


def test_full_size_is_the_benchs_spec_with_both_training_folders():
    keys = sizes.run_keys(1.0, tiny=False, image_size=32)
    assert keys["finetune.epochs"] == 0  # phase 1 alone: auto would add a whole full-size epoch of fine-tuning
    for name in ("identities", "large_identities", "train_images", "val_trials", "test_trials"):
        assert keys[f"synthetic.{name}"] == FULL[name], name
    assert (keys["synthetic.identities"] + keys["synthetic.large_identities"]) * keys[
        "synthetic.train_images"
    ] == 378_400
    assert keys["synthetic.render_size"] == 32
    assert keys["data.train_subsets"] == ["medium", "large"] and keys["data.source"] == "synthetic"
    assert keys["train.epochs"] == "auto" and keys["train.steps"] == sizes.DEFAULT_TRAIN_STEPS
    assert keys["train.warmup_epochs"] == sizes.DEFAULT_WARMUP_EPOCHS  # else one epoch would be all warm-up
    assert "train.warmup_epochs" not in sizes.run_keys(1.0, tiny=False, image_size=32, train_steps=9000)


def test_layers_apply_in_order_recipe_size_budget_settings():
    recipe = {"train.epochs": 30, "synthetic.identities": 7, "model.width": 1.0}
    keys = sizes.run_keys(0.5, False, 32, recipe=recipe)
    assert keys["train.epochs"] == 30 and "train.steps" not in keys  # the recipe's own budget stands
    assert keys["synthetic.identities"] == 1150  # the size wins over the recipe
    keys = sizes.run_keys(0.5, False, 32, train_steps=500, recipe=recipe, settings={"train.steps": 600})
    assert keys["train.epochs"] == "auto" and keys["train.steps"] == 600 and keys["model.width"] == 1.0
    assert sizes.run_keys(1.0, False, 32, recipe={"finetune.epochs": 2})["finetune.epochs"] == 2
    assert sizes.run_keys(1.0, False, 32, settings={"finetune.epochs": "auto"})["finetune.epochs"] == "auto"
    assert sizes.run_keys(1.0, False, 32, epochs=2)["train.epochs"] == 2
    tiny = sizes.run_keys(1.0, True, 32)
    assert tiny["train.epochs"] == 1 and tiny["synthetic.identities"] == 24 and "train.steps" not in tiny


def test_the_fold_plan_is_what_the_train_stage_runs():
    """Steps per epoch as the train stage counts them (the tiny run logged 232 images: 7 steps of 32; the 1% run
    3,807 images: 29 steps of 128); full size: 378,400 + 2,300 held-in validation images, 2,974 steps of 128."""
    from pipeline.params import parse_params
    from pipeline.params_edit import nest

    def plan(**kw):
        return sizes.fold_plan(parse_params(nest(sizes.run_keys(**kw)), check_model=False))

    assert plan(scale=1.0, tiny=False, image_size=32) == (1, 2974)
    assert plan(scale=1.0, tiny=False, image_size=32, train_steps=6000) == (3, 2974)
    assert plan(scale=1.0, tiny=True, image_size=32) == (1, 7)
    assert plan(scale=0.01, tiny=False, image_size=32, train_steps=40) == (2, 29)


def test_settings_are_yaml_values_and_need_an_equals_sign():
    assert sizes.parse_settings(["folds.train=[0]", "train.lr=0.01", "train.epochs=auto", "data.path="]) == {
        "folds.train": [0],
        "train.lr": 0.01,
        "train.epochs": "auto",
        "data.path": None,
    }
    with pytest.raises(ValueError, match="expected key=value"):
        sizes.parse_settings(["train.lr"])


# --- measurements -------------------------------------------------------------------------------------------------


def _on_tmpfs(path: Path) -> bool:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2] in ("tmpfs", "ramfs")


def test_a_commands_peak_memory_and_writes_are_measured(tmp_path: Path):
    code = (
        "import os, time\n"
        "block = bytearray(200 * 2**20)\n"  # resident: bytearray zero-fills every page
        "with open('out.bin', 'wb') as f:\n"
        "    f.write(os.urandom(8 * 2**20)); f.flush(); os.fsync(f.fileno())\n"
        "time.sleep(1.5)\n"
        "print('done')\n"
    )
    ticks = []
    m = run_measured(
        [sys.executable, "-c", code],
        tmp_path,
        dict(os.environ),
        tmp_path / "logs" / "x.log",
        progress=lambda *a: ticks.append(a),
        progress_every_s=0.5,
        sample_every_s=0.2,
    )
    assert m.returncode == 0 and m.wall_s >= 1.5
    assert 200 * MIB <= m.max_rss < 400 * MIB
    assert 200 * MIB <= m.peak_tree < 400 * MIB
    if not _on_tmpfs(tmp_path):
        assert m.written >= 8 * MIB
    assert m.last_line == "done" and (tmp_path / "logs" / "x.log").read_text() == "done\n"
    assert ticks and ticks[0][1] > 0
    assert disk_usage([tmp_path / "out.bin", tmp_path / "missing"]) >= 8 * MIB


def test_a_large_parent_does_not_inflate_the_childs_peak(tmp_path: Path):
    """Linux counts a forked child's memory from the fork: measured in the launcher, `true` stays small however
    large the process that starts it (the scale command holds torch)."""
    ballast = np.ones(400 * MIB // 8)  # noqa: F841 (resident while the child runs)
    m = run_measured(["true"], tmp_path, dict(os.environ), tmp_path / "t.log")
    assert m.returncode == 0 and 0 < m.max_rss < 100 * MIB


def test_the_exit_status_is_the_commands(tmp_path: Path):
    assert run_measured(["sh", "-c", "exit 3"], tmp_path, dict(os.environ), tmp_path / "t.log").returncode == 3


# --- the table ----------------------------------------------------------------------------------------------------


def _row(stage: str, wall: float, rss: int = 2**30) -> rep.StageRow:
    return rep.StageRow(stage, "ran", wall, rss, rss, 10 * MIB, 20 * MIB)


def test_targets_are_the_issues():
    assert _row("index", 299).met() and not _row("index", 301).met()
    assert _row("train@0", 3600).met() and _row("embed@1", 900).met()  # train and embed may take longer
    assert not _row("decode", 10, rss=9 * 2**30).met()
    assert rep.NoopRow(59, [], MIB).met() and not rep.NoopRow(61, [], MIB).met()
    assert not rep.NoopRow(5, ["train@0"], MIB).met()


def test_markdown_has_a_row_per_stage_and_the_noop_row():
    report = rep.ScaleReport("t", "/w", "abcdef0123", {}, {}, [_row("download", 200), _row("train@0", 4000)])
    report.noop = rep.NoopRow(12.0, [], 60 * MIB)
    report.disk = {"raw": 2**30, "decoded": 2**30, "dvc_cache": 0, "workdir": 3 * 2**30}
    text = rep.markdown(report)
    assert "| `download` | 3 min 20 s | 1.00 GiB |" in text
    assert "| `train@0` | 1 h 06 min |" in text
    assert "| second `dvc repro`, nothing changed | 12.0 s |" in text
    assert "= 3.0x the raw data" in text and "every target met: yes" in text


def test_a_submission_that_fails_validation_misses_the_targets():
    report = rep.ScaleReport("t", "/w", "c", {}, {}, [_row("download", 200)])
    report.noop = rep.NoopRow(12.0, [], 60 * MIB)
    report.validated = [rep.Validation("submissions/classification.csv", True, "OK (4600 rows)", 0.4)]
    assert report.met()
    # a file whose checker's words happen to say "ok" still fails on its exit status
    report.validated.append(rep.Validation("submissions/verification.csv", False, "line 7: score 'nan': ok? no", 0.2))
    assert not report.met()
    assert "`python -m pipeline validate` submissions/verification.csv: FAILED" in rep.markdown(report)
    assert "every target met: **no**" in rep.markdown(report)


def test_earlier_figures_carry_over_for_stages_a_resumed_run_skips():
    report = rep.ScaleReport(
        "t", "/w", "c", {}, {}, [_row("download", 200), rep.StageRow("index", "failed", 1, 0, 0, 0, 0)]
    )
    rows = rep.earlier_rows(json.loads(json.dumps(report.to_json())))
    assert set(rows) == {"download"} and rows["download"].status == "earlier" and rows["download"].wall_s == 200


# --- the working copy ---------------------------------------------------------------------------------------------


def test_a_foreign_folder_is_never_used(tmp_path: Path):
    project = make_project(tmp_path / "project")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    with pytest.raises(workdir.WorkdirError, match="not a working copy made by"):
        workdir.prepare(project, tmp_path / "busy")
    with pytest.raises(workdir.WorkdirError, match="inside the project"):
        workdir.prepare(project, project / "scale-copy")


def test_uncommitted_changes_are_named_in_full(tmp_path: Path):
    """Porcelain lines begin with a status column that is often a space: the paths keep their first letter."""
    project = make_project(tmp_path / "project")
    (project / "pipeline" / "io.py").write_text((project / "pipeline" / "io.py").read_text() + "\n")
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
    run(["git", "add", "params.yaml"], project)
    assert workdir.uncommitted_sources(project) == ["params.yaml", "pipeline/io.py"]


def test_bad_settings_are_refused_before_params_yaml_changes(tmp_path: Path):
    project = make_project(tmp_path / "project")
    wd = workdir.prepare(project, tmp_path / "copy")
    before = (wd.path / "params.yaml").read_text()
    with pytest.raises(ParamsError, match="train.lrr"):
        workdir.write_params(wd.path, {"train.lrr": 0.1})
    assert (wd.path / "params.yaml").read_text() == before
    assert workdir.prepare(project, tmp_path / "copy").reused


# --- the whole flow -----------------------------------------------------------------------------------------------


def _scale(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline", "scale", *args], project, check=check, timeout=600)


def test_dry_run_writes_the_full_size_params(tmp_path: Path):
    project = make_project(tmp_path / "project")
    out = _scale(project, "--workdir", str(tmp_path / "copy"), "--dry-run", "--train-steps", "6000").stdout
    params = flatten(yaml.safe_load((tmp_path / "copy" / "params.yaml").read_text()))
    for name in ("identities", "large_identities", "train_images", "val_trials", "test_trials"):
        assert params[f"synthetic.{name}"] == FULL[name], name
    assert params["data.train_subsets"] == ["medium", "large"]
    assert params["train.steps"] == 6000 and params["train.epochs"] == "auto"
    assert "378,400 training images of 4,300 identities, 100,000 validation and 900,000 test trials" in out
    assert "per fold 3 epoch(s) x 2,974 steps (train.steps 6,000, epochs: auto)" in out
    assert "stages, in dvc repro's order: download, index, decode, folds, augment, source, train@0" in out
    assert not (tmp_path / "copy" / "data").exists()  # nothing ran

    # A budget the train stage would refuse (one epoch, one epoch of warmup) is refused now, not after the render.
    refused = _scale(project, "--workdir", str(tmp_path / "copy"), "--train-steps", "2000", check=False)
    assert refused.returncode == 1
    assert "the budget gives 1 epoch(s) of 2,974 steps per fold, but train.warmup_epochs is 1" in refused.stderr
    assert "--train-steps above 2,974" in refused.stderr
    assert not (tmp_path / "copy" / "data").exists()


@pytest.mark.slow
def test_tiny_run_measures_every_stage_then_resumes_with_the_same_figures(tmp_path: Path):
    project = make_project(tmp_path / "project")
    copy = tmp_path / "copy"
    out = _scale(project, "--tiny", "--workdir", str(copy), "-S", "folds.train=[0]").stdout
    stages = stage_order(copy, environment())  # dvc repro's order, whatever stages dvc.yaml holds today
    assert {"download", "index", "decode", "folds", "augment", "train@0", "embed@0", "ensemble"} <= set(stages)
    assert "train@1" not in stages  # -S folds.train=[0] reached the foreach
    report = json.loads((copy / "scale" / "report.json").read_text())
    assert [r["stage"] for r in report["stages"]] == stages
    for r in report["stages"]:
        assert r["status"] == "ran", r
        assert r["wall_s"] > 0 and r["max_rss"] > 0 and r["peak_tree"] > 0 and r["outputs"] > 0, r
    assert report["noop"]["ran"] == [] and report["noop"]["wall_s"] > 0
    assert report["disk"]["raw"] > 0 and report["disk"]["workdir"] > report["disk"]["raw"]
    assert 0 <= report["metrics"]["val_auc"] <= 1 and 0 <= report["metrics"]["val_accuracy"] <= 1
    assert list(report["metrics"]["fold_auc"]) == ["fold0"]
    # each submission passed the real `python -m pipeline validate`, as a user checks one before uploading
    assert [v["file"] for v in report["validated"]] == list(SUBMISSIONS)
    assert all(v["ok"] and v["said"].startswith("OK") for v in report["validated"]), report["validated"]
    table = (copy / "scale" / "report.md").read_text()
    assert all(f"| `{s}` |" in table for s in stages) and "| second `dvc repro`, nothing changed |" in table
    assert table in out  # printed as written
    params = flatten(yaml.safe_load((copy / "params.yaml").read_text()))
    asked = {**sizes.TINY, **sizes.FULL_SIZE_DATA, "folds.train": [0]}
    assert {k: params[k] for k in asked} == asked

    again = _scale(project, "--tiny", "--workdir", str(copy), "-S", "folds.train=[0]").stdout
    assert "reusing it" in again
    resumed = json.loads((copy / "scale" / "report.json").read_text())
    assert [r["status"] for r in resumed["stages"]] == ["earlier"] * len(stages)
    assert [r["wall_s"] for r in resumed["stages"]] == [r["wall_s"] for r in report["stages"]]
