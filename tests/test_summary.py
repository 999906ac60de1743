"""The end-of-run summary: submissions with row counts, validation (and hidden test) figures, next commands."""

import json
from pathlib import Path

import pytest

from pipeline.summary import summary_lines

METRICS = {
    "val_auc": 0.99,
    "val_eer": 0.04,
    "val_accuracy": 0.95,
    "pixel_baseline_auc": 0.74,
    "folds": {"fold0": {"val_auc": 0.98}, "fold1": {"val_auc": 0.985}},
}


def run_outputs(root: Path) -> Path:
    (root / "submissions").mkdir(parents=True)
    (root / "submissions/classification.csv").write_text("id,label\n0,a\n1,b\n")
    (root / "submissions/verification.csv").write_text("trial,score\nx.jpg y.jpg,0.5\nx.jpg z.jpg,0.1\ny.jpg z.jpg,0.9")
    (root / "metrics").mkdir()
    (root / "metrics/ensemble.json").write_text(json.dumps(METRICS))
    return root


def test_summary_names_files_rows_figures_and_next_steps(tmp_path: Path):
    lines = summary_lines(run_outputs(tmp_path), hidden=False)
    assert lines[0] == (
        "submissions: submissions/classification.csv (2 rows), submissions/verification.csv (3 rows)"
    )  # the last line of verification.csv has no newline: still a row
    assert lines[1].startswith("validation: AUC 0.9900 (folds 0.9800, 0.9850; raw pixels 0.7400), EER 0.0400")
    assert "accuracy 0.9500" in lines[1]
    assert any("make submit" in line for line in lines) and any("python -m pipeline validate" in line for line in lines)


def test_hidden_answers_give_test_figures_or_say_why_not(tmp_path: Path):
    root = run_outputs(tmp_path)
    (root / "params.yaml").write_text("{}\n")
    assert "no hidden answers here" in summary_lines(root, hidden=True)[2]
    (root / "data/solution").mkdir(parents=True)
    (root / "data/solution/classification_solution.csv").write_text("id,label\n0,a\n1,a\n")
    (root / "data/solution/verification_solution.csv").write_text(
        "trial,label\nx.jpg y.jpg,1\nx.jpg z.jpg,0\ny.jpg z.jpg,1\n"
    )
    assert summary_lines(root, hidden=True)[2] == "test (hidden answers in data/solution): AUC 1.0000, accuracy 0.5000"


def test_missing_outputs_say_what_to_run(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run `make repro`"):
        summary_lines(tmp_path, hidden=False)
