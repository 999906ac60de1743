"""The whole pipeline, for real: `dvc repro` on tiny params in a throwaway copy of the project.

These tests share one reproduced copy (`tiny_repro`); the ones that edit it run last, in file order.
"""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run

pytestmark = pytest.mark.slow

STAGES_AFTER_TRAINING = {"train@0", "train@1", "embed@0", "embed@1", "ensemble"}


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_writes_both_valid_submissions(tiny_repro: Path):
    for name in ("classification.csv", "verification.csv"):
        out = run(["python", "-m", "pipeline", "validate", f"submissions/{name}"], tiny_repro)
        assert out.stdout.startswith("OK:")
    cls = pd.read_csv(tiny_repro / "submissions/classification.csv", dtype=str)
    order = (tiny_repro / "data/raw/test_order_classification.txt").read_text().split()
    assert list(cls.columns) == ["id", "label"]
    assert cls["id"].tolist() == [n.removesuffix(".jpg") for n in order]
    trials = (tiny_repro / "data/raw/test_trials_verification_student.txt").read_text().splitlines()
    ver = pd.read_csv(tiny_repro / "submissions/verification.csv", dtype={"trial": str})
    assert ver["trial"].tolist() == trials


def test_metrics_per_fold_and_ensemble(tiny_repro: Path):
    metrics = json.loads((tiny_repro / "metrics/ensemble.json").read_text())
    for key in ("val_auc", "val_eer", "val_tar_at_far", "val_accuracy", "pixel_baseline_auc", "fold_mean_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert set(metrics["folds"]) == {"fold0", "fold1"}
    shown = run(["dvc", "metrics", "show", "--json"], tiny_repro).stdout
    assert "folds" in shown and "dvclive/fold0/metrics.json" in shown and "dvclive/fold1/metrics.json" in shown
    for plot in ("plots/roc.csv", "plots/roc.png", "plots/augment_preview.png"):
        assert (tiny_repro / plot).stat().st_size > 0


def test_local_scorer_scores_the_test_submission(tiny_repro: Path):
    out = json.loads(run(["python", "-m", "pipeline", "score", "submissions/verification.csv"], tiny_repro).stdout)
    assert 0.0 <= out["auc"] <= 1.0
    out = json.loads(run(["python", "-m", "pipeline", "score", "submissions/classification.csv"], tiny_repro).stdout)
    assert 0.0 <= out["accuracy"] <= 1.0


def test_second_repro_does_nothing(tiny_repro: Path):
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert ran_stages(out) == set(), out


def test_editing_the_submission_writer_does_not_retrain(tiny_repro: Path):
    writer = tiny_repro / "pipeline/submission.py"
    writer.write_text(writer.read_text() + "\n# an edit that changes no behaviour\n")
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert not any(s.startswith(("train@", "embed@")) for s in ran_stages(out)), out
    assert "ensemble" in ran_stages(out)


def test_exp_run_with_other_epochs_reruns_only_training_and_after(tiny_repro: Path):
    run(["git", "add", "-A"], tiny_repro)
    run(["git", "commit", "-qm", "after repro"], tiny_repro)
    out = run(["dvc", "exp", "run", "-S", "train.epochs=3"], tiny_repro).stdout
    assert ran_stages(out) == STAGES_AFTER_TRAINING, out
    shown = run(["dvc", "exp", "show", "--json"], tiny_repro).stdout
    assert "val_auc" in shown
