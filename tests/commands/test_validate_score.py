"""`python -m pipeline validate|score` as real processes, in a tiny hand-written competition."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRIALS = ["a.jpg b.jpg", "a.jpg c.jpg", "b.jpg c.jpg", "c.jpg d.jpg"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    """params.yaml, data/raw in the HW2P2 layout (two training subsets) and data/solution, under tmp_path."""
    (tmp_path / "params.yaml").write_text("data:\n  train_subsets: [medium, large]\n")
    raw = tmp_path / "data" / "raw"
    for subset, names in (("medium", ["n001", "n002"]), ("large", ["n010"])):
        for name in names:
            (raw / "train_data" / subset / name).mkdir(parents=True)
    (raw / "test_order_classification.txt").write_text("0.jpg\n1.jpg\n2.jpg\n")
    (raw / "test_trials_verification_student.txt").write_text("\n".join(TRIALS) + "\n")
    solution = tmp_path / "data" / "solution"
    solution.mkdir()
    (solution / "classification_solution.csv").write_text("id,label\n0,n001\n1,n002\n2,n010\n")
    (solution / "verification_solution.csv").write_text(
        "trial,label\n" + "".join(f"{t},{y}\n" for t, y in zip(TRIALS, [1, 0, 1, 0], strict=True))
    )
    (tmp_path / "classification.csv").write_text("id,label\n0,n001\n1,n002\n2,n002\n")
    (tmp_path / "verification.csv").write_text(
        "trial,score\na.jpg b.jpg,0.9\na.jpg c.jpg,0.5\nb.jpg c.jpg,0.4\nc.jpg d.jpg,0.1\n"
    )
    return tmp_path


def test_validate_accepts_good_files(competition: Path) -> None:
    for name, task in (("classification.csv", "classification"), ("verification.csv", "verification")):
        for extra in ([], ["--task", task]):
            result = run(competition, "validate", name, *extra)
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == f"OK: {name} ({3 if task == 'classification' else 4} rows)"


def test_validate_refuses_class_indices(competition: Path) -> None:
    (competition / "classification.csv").write_text("id,label\n0,n001\n1,1\n2,n010\n")
    result = run(competition, "validate", "classification.csv")
    assert result.returncode == 1
    assert "classification.csv:3: label '1' is not a known identity name; a class index?" in result.stderr
    assert result.stdout == ""


def test_validate_refuses_rows_out_of_trial_order(competition: Path) -> None:
    text = "trial,score\na.jpg c.jpg,0.5\na.jpg b.jpg,0.9\nb.jpg c.jpg,0.4\nc.jpg d.jpg,0.1\n"
    (competition / "verification.csv").write_text(text)
    result = run(competition, "validate", "verification.csv")
    assert result.returncode == 1
    assert "verification.csv:2: trial 'a.jpg c.jpg' is out of order" in result.stderr
    assert "test_trials_verification_student.txt" in result.stderr


def test_validate_header_and_task_mismatches(competition: Path) -> None:
    result = run(competition, "validate", "verification.csv", "--task", "classification")
    assert (
        result.returncode == 1 and "verification.csv:1: header is 'trial,score', expected 'id,label'" in result.stderr
    )
    (competition / "odd.csv").write_text("image,guess\n0,n001\n")
    result = run(competition, "validate", "odd.csv")
    assert result.returncode == 1 and "cannot tell the task" in result.stderr and "--task" in result.stderr


def test_validate_reports_missing_inputs(competition: Path, tmp_path: Path) -> None:
    result = run(competition, "validate", "classification.csv", "--root", "elsewhere")
    assert result.returncode == 1 and "test_order_classification.txt" in result.stderr
    result = run(competition, "validate", "nope.csv")
    assert result.returncode == 1 and "nope.csv" in result.stderr
    (competition / "params.yaml").write_text("submision: {}\n")
    result = run(competition, "validate", "classification.csv")
    assert result.returncode == 1 and "did you mean 'submission'" in result.stderr


def test_validate_follows_params_headers_and_layout(competition: Path) -> None:
    (competition / "params.yaml").write_text(
        "layout:\n  test_order: order.txt\n"
        "submission:\n  classification_header: [Id, Category]\n  classification_id: name\n"
    )
    (competition / "data" / "raw" / "order.txt").write_text("7.jpg\n8.jpg\n")
    (competition / "spring2020.csv").write_text("Id,Category\n7.jpg,n001\n8.jpg,n002\n")
    result = run(competition, "validate", "spring2020.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK: spring2020.csv (2 rows)"


def test_score_prints_json(competition: Path) -> None:
    result = run(competition, "score", "classification.csv")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(2 / 3)
    result = run(competition, "score", "verification.csv", "--task", "verification")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # Positives score 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ordered right.
    assert report["task"] == "verification"
    assert report["auc"] == pytest.approx(0.75)
    assert report["eer"] == pytest.approx(0.5)
    assert set(report) >= {"auc", "eer", "tar_at_far", "far"}


def test_score_without_hidden_answers(competition: Path) -> None:
    result = run(competition, "score", "verification.csv", "--solution", "no/such/folder")
    assert result.returncode == 1
    assert "hidden answers exist only for synthetic/imagefolder competitions" in result.stderr


def test_score_refuses_an_invalid_submission(competition: Path) -> None:
    (competition / "classification.csv").write_text("id,label\n0,n001\n1,n002\n")
    result = run(competition, "score", "classification.csv")
    assert result.returncode == 1
    assert "classification.csv:4: the file ends after 2 rows" in result.stderr
