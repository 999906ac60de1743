"""The whole pipeline, for real: `dvc repro` on tiny params in a throwaway copy of the project.

These tests share one reproduced copy (`tiny_repro`); the ones that edit it run last, in file order.
"""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY_PARAMS, run

pytestmark = pytest.mark.slow

STAGES_AFTER_TRAINING = {"train@0", "train@1", "embed@0", "embed@1", "ensemble"}
# Modules only the ensemble stage imports, and only the analyse stage: editing one never re-runs a fold.
ENSEMBLE_MODULES = (
    "pipeline/scoring.py",
    "pipeline/ensemble.py",
    "pipeline/classify.py",
    "pipeline/submission.py",
    "pipeline/plots.py",
)
ANALYSIS_MODULES = ("pipeline/gallery.py", "pipeline/failures.py", "pipeline/confusions.py")
# What the tiny params must learn, with room below the smallest of seeds 0-3 (tests/conftest.py: AUC margin
# 0.117-0.189 over raw pixels, accuracy 0.479-0.542 where chance is 1/24).
LEARNING_MARGIN = 0.05
MIN_ACCURACY = 0.25


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


def test_summary_says_what_the_run_produced(tiny_repro: Path):
    out = run(["python", "-m", "pipeline", "summary"], tiny_repro).stdout.splitlines()
    metrics = json.loads((tiny_repro / "metrics/ensemble.json").read_text())
    assert out[0] == (
        f"submissions: submissions/classification.csv ({2 * 24} rows), submissions/verification.csv (60 rows)"
    )
    assert out[1].startswith(f"validation: AUC {metrics['val_auc']:.4f}")
    assert out[2].startswith("test (hidden answers in data/solution): AUC ")
    assert any("make submit" in line for line in out)


def test_second_repro_does_nothing(tiny_repro: Path):
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert ran_stages(out) == set(), out


def test_the_ensemble_beats_raw_pixels(tiny_repro: Path):
    """Learning, not only numbers in [0, 1] (margins calibrated over seeds: LEARNING_MARGIN)."""
    metrics = json.loads((tiny_repro / "metrics/ensemble.json").read_text())
    assert metrics["val_auc"] >= metrics["pixel_baseline_auc"] + LEARNING_MARGIN, metrics
    assert metrics["val_accuracy"] >= MIN_ACCURACY, metrics


def test_each_fold_logs_the_budget_that_ran(tiny_repro: Path):
    for fold in (0, 1):
        summary = json.loads((tiny_repro / f"dvclive/fold{fold}/metrics.json").read_text())
        assert summary["epochs"] == TINY_PARAMS["train"]["epochs"] and summary["steps"] % summary["epochs"] == 0
        assert summary["finetune_epochs"] == TINY_PARAMS["finetune"]["epochs"]
        rows = (tiny_repro / f"dvclive/fold{fold}/plots/metrics/train_loss.tsv").read_text().splitlines()[1:]
        assert len(rows) == summary["epochs"] + summary["finetune_epochs"]


def test_stages_read_only_the_params_they_declare(tiny_repro: Path):
    """Every params key a stage's code read during the repro (pipeline.params.trace_reads) is in its dvc.yaml
    `params:` list, so no key can change a stage's output without DVC re-running it."""
    stages = yaml.safe_load((tiny_repro / "dvc.yaml").read_text())["stages"]
    declared = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        declared[re.match(r"python -m (\S+)", body["cmd"]).group(1)] = (name, body.get("params", []))
    traces = list((tiny_repro.parent / "params_read").glob("*.json"))
    assert {t.name.rsplit(".", 2)[0] for t in traces} == set(declared)  # every stage ran and wrote its trace
    for trace in traces:
        name, listed = declared[trace.name.rsplit(".", 2)[0]]
        read = json.loads(trace.read_text())
        undeclared = [k for k in read if not any(k == d or k.startswith(f"{d}.") for d in listed)]
        assert not undeclared, f"stage {name} reads {undeclared} but dvc.yaml lists only {listed}"


def edit(project: Path, module: str) -> None:
    path = project / module
    path.write_text(path.read_text() + "\n# an edit that changes no behaviour\n")


def test_editing_scoring_or_submission_code_never_retrains(tiny_repro: Path):
    """Each module, edited in turn, changes the ensemble stage alone (`dvc status`); one repro then runs only it."""
    for module in ENSEMBLE_MODULES:
        edit(tiny_repro, module)
        status = run(["dvc", "status", "--json"], tiny_repro).stdout
        assert set(json.loads(status)) == {"ensemble"}, (module, status)
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert ran_stages(out) == {"ensemble"}, out


def test_editing_the_error_analysis_reruns_only_the_drawing(tiny_repro: Path):
    for module in ANALYSIS_MODULES:
        edit(tiny_repro, module)
        status = run(["dvc", "status", "--json"], tiny_repro).stdout
        assert set(json.loads(status)) == {"analyse"}, (module, status)
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert ran_stages(out) == {"analyse"}, out


def test_exp_run_with_other_epochs_reruns_only_training_and_after(tiny_repro: Path):
    run(["git", "add", "-A"], tiny_repro)
    run(["git", "commit", "-qm", "after repro"], tiny_repro)
    proc = run(["dvc", "exp", "run", "-S", "train.epochs=2"], tiny_repro)
    out, logged = proc.stdout, proc.stdout + proc.stderr
    assert ran_stages(out) == STAGES_AFTER_TRAINING | {"analyse"}, out  # analyse draws from the new scores
    shown = run(["dvc", "exp", "show", "--json"], tiny_repro).stdout
    assert "val_auc" in shown
    for fold in (0, 1):  # the knob means what it says: 2 epochs ran (then the 1-epoch fine-tune)
        summary = json.loads((tiny_repro / f"dvclive/fold{fold}/metrics.json").read_text())
        assert (summary["epochs"], summary["finetune_epochs"]) == (2, 1)
    assert logged.count("train.epochs=2 (train.steps is not used)") == 2, logged[-3000:]  # logged by each fold
    assert "submissions: submissions/classification.csv" in logged  # the ensemble stage ends with the summary


def test_another_classify_method_reruns_only_the_stages_after_the_embeddings(tiny_repro: Path):
    params = yaml.safe_load((tiny_repro / "params.yaml").read_text())
    params["classify"].update(method="head", balance=False)  # the defaults are prototype, auto
    (tiny_repro / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = (tiny_repro / "submissions/classification.csv").read_text()
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert "ensemble" in ran_stages(out) and not ran_stages(out) & STAGES_AFTER_TRAINING - {"ensemble"}, out
    # The models here are the 2-epoch ones of the test above, so no accuracy bound: the knob is wired through.
    assert 0.0 <= json.loads((tiny_repro / "metrics/ensemble.json").read_text())["val_accuracy"] <= 1.0
    assert (tiny_repro / "submissions/classification.csv").read_text() != before


def test_exp_run_with_a_gallery_param_reruns_only_the_drawing(tiny_repro: Path):
    run(["git", "add", "-A"], tiny_repro)
    run(["git", "commit", "-qm", "after the experiments above"], tiny_repro)
    out = run(["dvc", "exp", "run", "-S", "analysis.gallery_pairs=3"], tiny_repro).stdout
    assert ran_stages(out) == {"analyse"}, out
    for kind in ("false_accepts", "false_rejects"):
        assert sorted(p.name for p in (tiny_repro / "plots/analysis" / kind).iterdir()) == ["1.png", "2.png", "3.png"]


def test_scale_tta_reruns_only_the_embeddings_and_after_and_changes_them(tiny_repro: Path):
    """`embed.scales` is an embed-stage knob: the folds are not retrained (their per-epoch evaluation leaves the
    zooms out), the embeddings are recomputed with the extra views and the ensemble scores them."""
    import numpy as np

    def embeddings() -> np.ndarray:
        with np.load(tiny_repro / "embeddings/fold0.npz") as npz:
            return npz["val_verification_embeddings"]

    before = embeddings()
    params = yaml.safe_load((tiny_repro / "params.yaml").read_text())
    params["embed"]["scales"] = [0.9, 1.1]
    (tiny_repro / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], tiny_repro).stdout
    assert ran_stages(out) & STAGES_AFTER_TRAINING == {"embed@0", "embed@1", "ensemble"}, out
    after = embeddings()
    assert after.shape == before.shape
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
