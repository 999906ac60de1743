"""`python -m pipeline study`: its key=value reading, its mean +- sd summary, and one real run on real faces (a
working copy, `dvc repro`, the hidden answers, an ensemble-only variant scored on the same model)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import yaml

from pipeline.commands.study import FIELDS, append, key_value, summarise, versus_rows
from tests.conftest import make_project, run, shared_data


def test_values_are_read_as_yaml():
    assert key_value("model.stem_stride=4") == ("model.stem_stride", 4)
    assert key_value("folds.train=[0]") == ("folds.train", [0])
    assert key_value("score.whiten=true") == ("score.whiten", True)
    assert key_value("model.name= resnet34") == ("model.name", "resnet34")
    for bad in ("score.whiten", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="not key=value"):
            key_value(bad)


def row(name: str, variant: str, split: int, seed: int, auc: float, acc: float) -> dict:
    return {
        "name": name,
        "variant": variant,
        "data": "/x/lfw158/images",
        "split_seed": split,
        "seed": seed,
        "val_auc": auc,
        "val_accuracy": acc,
        "test_auc": auc - 0.01,
        "test_accuracy": acc,
        "fold_aucs": f"{auc:.4f}",
        "repro_s": 1,
        "commit": "abc1234",
        "keys": "{}",
    }


def test_summary_is_mean_and_sample_sd_per_name_variant_and_split(tmp_path: Path):
    results = tmp_path / "study.csv"
    for seed, auc in enumerate((0.90, 0.92, 0.94)):
        append(results, row("default", "-", 7, seed, auc, 0.7))
    append(results, row("default", "score.whiten=True", 7, 0, 0.95, 0.7))
    append(results, row("default", "-", 11785, 0, 0.91, 0.8))
    with results.open() as f:
        assert tuple(next(csv.reader(f))) == FIELDS
    append(results, row("default", "score.whiten=True", 7, 2, 0.93, 0.75))
    lines = summarise(results)
    assert len(lines) == 4
    assert lines[0].startswith("default [-] lfw158/7 seeds 0,1,2: val_auc 0.9200 +- 0.0200")
    assert "test_auc 0.9100 +- 0.0200" in lines[0]
    assert lines[1].startswith("default [score.whiten=True] lfw158/7 seeds 0,2: val_auc 0.9400 +- 0.0141")
    # seed 0: +0.05 over 0.90; seed 2: -0.01 under 0.94
    assert lines[2] == (
        "  minus the same models' main run (2 paired): val_auc +0.0200 +- 0.0424, val_accuracy +0.0250 +- 0.0354, "
        "test_auc +0.0200 +- 0.0424, test_accuracy +0.0250 +- 0.0354"
    )
    assert "lfw158/11785" in lines[3]


def test_versus_pairs_other_studies_main_runs_with_the_named_rows_of_the_same_seed(tmp_path: Path):
    results = tmp_path / "study.csv"
    for seed, auc in enumerate((0.90, 0.92, 0.94)):
        append(results, row("default", "-", 7, seed, auc, 0.7))
        append(results, row("default", "score.whiten=True", 7, seed, auc + 0.01, 0.7))
    append(results, row("two-phase", "-", 7, 0, 0.95, 0.8))
    append(results, row("two-phase", "-", 7, 2, 0.93, 0.8))
    append(results, row("two-phase", "-", 11785, 0, 0.99, 0.8))  # no default run on this split: not paired
    append(results, row("two-phase", "score.whiten=False", 7, 0, 0.91, 0.8))
    lines = summarise(results, versus_rows("default:score.whiten=True"))
    # seed 0: 0.95 - 0.91; seed 2: 0.93 - 0.95
    prefix = "  minus default [score.whiten=True], same seeds (2 paired): val_auc +0.0100 +- 0.0424, "
    assert any(line.startswith(prefix) for line in lines)
    assert sum("minus default" in line for line in lines) == 1  # not the variant, not the unpaired split
    plain = summarise(results, versus_rows("default"))
    prefix = "  minus default [-], same seeds (2 paired): val_auc +0.0200 +- 0.0424"
    assert any(line.startswith(prefix) for line in plain)
    assert not any("minus default" in line for line in summarise(results))
    with pytest.raises(argparse.ArgumentTypeError):
        versus_rows(":score.whiten=True")


def test_bad_arguments_fail_before_any_working_copy_is_made(tmp_path: Path):
    project = make_project(tmp_path / "project")
    study = ["python", "-m", "pipeline", "study", "--name", "x", "--workdir", str(tmp_path / "work")]
    done = run(study, project, check=False)
    assert done.returncode == 2 and "--name and --data are needed" in done.stderr
    done = run([*study, "--data", str(tmp_path / "absent")], project, check=False)
    assert done.returncode == 2 and "absent is not a folder" in done.stderr
    faces = tmp_path / "faces"
    faces.mkdir()
    done = run([*study, "--data", str(faces), "-S", "train.lr=-1"], project, check=False)
    assert done.returncode == 1 and "train.lr" in done.stderr and "Traceback" not in done.stderr
    done = run([*study, "--data", str(faces), "--rescore", "score.whiten=maybe"], project, check=False)
    assert done.returncode == 1 and "score.whiten" in done.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_one_seed_on_real_faces_with_a_rescored_variant(tmp_path: Path):
    orl = shared_data("orl40") / "images"
    project = make_project(tmp_path / "project")
    tiny = [
        "data.image_size=32",
        "imagefolder.crop_size=32",
        "train.epochs=2",
        "train.warmup_epochs=0.5",
        "train.batch_size=32",
        "train.num_workers=0",
        "finetune.epochs=1",
        "folds.train=[0]",
        "embed.batch_size=128",
        "augment.preview_images=4",
        "source.identities=0",
    ]
    results = tmp_path / "study.csv"
    args = ["python", "-m", "pipeline", "study", "--name", "tiny", "--data", str(orl), "--split-seed", "3"]
    args += ["--seeds", "5", "--results", str(results), "--workdir", str(tmp_path / "work")]
    args += [a for key in tiny for a in ("-S", key)]
    args += ["--rescore", "score.whiten=false", "--rescore", "classify.method=head"]
    run(args, project)
    with results.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["-", "score.whiten=False", "classify.method=head"]
    for r in rows:
        assert r["seed"] == "5" and r["split_seed"] == "3"
        for key in ("val_auc", "test_auc", "val_accuracy", "test_accuracy"):
            assert 0.0 <= float(r[key]) <= 1.0, (key, r[key])
    keys = json.loads(rows[1]["keys"])
    assert keys["data.source"] == "imagefolder" and keys["seed"] == 5 and keys["score.whiten"] is False
    assert "data.path" not in keys and (project / rows[0]["data"]).resolve() == orl.resolve()  # no absolute path
    assert "score.whiten" not in json.loads(rows[0]["keys"]) and "score.whiten" not in json.loads(rows[2]["keys"])
    # each variant alone: the classification variant scores the trials as the main run does (whitened), not as
    # the variant before it left them
    assert rows[2]["val_auc"] == rows[0]["val_auc"] and rows[2]["test_auc"] == rows[0]["test_auc"]
    work = tmp_path / "work" / "tiny-3-5"
    assert (work / "submissions/verification.csv").is_file() and (work / "data/solution").is_dir()
    params = yaml.safe_load((work / "params.yaml").read_text())  # left as the main run's
    assert params["score"]["whiten"] is True and params["classify"]["method"] == "prototype"
