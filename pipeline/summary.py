"""What a run produced, in a few lines: the two submissions with their row counts, the validation figures (and the
hidden test figures where the competition has them), and the commands that usually come next.

The ensemble stage logs it last (so `dvc repro` and `dvc exp run` end with it) and `python -m pipeline summary`
prints it on demand, with the hidden test figures (`make repro` ends with that command).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import paths

NEXT = (
    "next: python -m pipeline validate submissions/verification.csv   (check a file as Kaggle would)",
    "      make submit        (python -m pipeline submit: upload both, recorded in submissions/history.csv)",
    "      make plots         (dvc plots show: one offline page of curves, ROC, failure gallery, confusions)",
    "      make experiments   (python -m pipeline experiments: which params won, after dvc exp run)",
)


def _rows(path: Path) -> int:
    """Data rows of a CSV with a header line (a final newline or not)."""
    data = path.read_bytes()
    return max(data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1) - 1, 0)


def _hidden_lines(root: Path, params_file: Path) -> list[str]:
    """Test figures from the hidden answers, when the competition has them (synthetic and imagefolder sources)."""
    from pipeline import metrics
    from pipeline.params import load_params
    from pipeline.submission import score_classification, verification_labels_scores

    ver_solution, cls_solution = root / paths.VERIFICATION_SOLUTION, root / paths.CLASSIFICATION_SOLUTION
    if not (ver_solution.is_file() and cls_solution.is_file()):
        return ["test: no hidden answers here (a Kaggle competition): submit and read the leaderboard"]
    sub = load_params(root / params_file, check_model=False).submission
    labels, scores = verification_labels_scores(root / paths.VERIFICATION_CSV, ver_solution, sub.verification_header)
    accuracy = score_classification(root / paths.CLASSIFICATION_CSV, cls_solution, sub.classification_header)
    return [
        f"test (hidden answers in {paths.SOLUTION}): AUC {metrics.roc_auc(labels, scores):.4f}, accuracy {accuracy:.4f}"
    ]


def summary_lines(root: Path = Path("."), hidden: bool = True, params_file: Path = Path("params.yaml")) -> list[str]:
    """The summary of the outputs under `root`; `hidden` adds the test figures from `data/solution`.

    Raises:
        FileNotFoundError: naming the missing output and the command that writes it.
    """
    lines = []
    counts = []
    for csv in (paths.CLASSIFICATION_CSV, paths.VERIFICATION_CSV):
        if not (root / csv).is_file():
            raise FileNotFoundError(f"{csv} is missing: run `make repro` (or `dvc repro`) first")
        counts.append(f"{csv} ({_rows(root / csv):,} rows)")
    lines.append("submissions: " + ", ".join(counts))
    metrics_file = root / paths.METRICS / "ensemble.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{paths.METRICS / 'ensemble.json'} is missing: run `make repro` first")
    m = json.loads(metrics_file.read_text(encoding="utf-8"))
    folds = ", ".join(f"{v['val_auc']:.4f}" for v in m.get("folds", {}).values())
    accuracy = f", accuracy {m['val_accuracy']:.4f} (out of fold)" if "val_accuracy" in m else ""
    lines.append(
        f"validation: AUC {m['val_auc']:.4f} (folds {folds}; raw pixels {m['pixel_baseline_auc']:.4f}), "
        f"EER {m['val_eer']:.4f}{accuracy}"
    )
    if hidden:
        lines.extend(_hidden_lines(root, params_file))
    return [*lines, *NEXT]
