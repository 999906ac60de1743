"""Real faces end to end (skipped where ../shared/data is absent): a 64 px HW2P2-layout folder through
`data.source: local`, and greyscale PGMs through `data.source: imagefolder`."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.params import ImagefolderParams, LayoutParams
from pipeline.sources.imagefolder import build_competition
from tests.conftest import TINY_PARAMS, make_project, merge, run, shared_data

pytestmark = pytest.mark.slow

TRAIN_ONLY = merge(
    {k: v for k, v in TINY_PARAMS.items() if k != "synthetic"}, {"folds": {"train": [0]}, "train": {"epochs": 2}}
)


def test_local_hw2p2_folder_of_64px_real_faces(tmp_path: Path):
    lfw = shared_data("lfw158") / "images"
    competition = tmp_path / "hw2p2"
    build_competition(lfw, competition, tmp_path / "answers", ImagefolderParams(center_crop=0.48), LayoutParams())
    # with the validation images as training data outside fold 0, and a triplet fine-tune after classification
    two_phase = {
        "folds": {"holdout": "validation", "k": 2},
        "finetune": {"epochs": 1, "loss": {"metric": "triplet", "miner": "semi_hard", "m_per_class": 4}},
    }
    params = merge(TRAIN_ONLY, {"data": {"source": "local", "path": str(competition)}, **two_phase})
    project = make_project(tmp_path / "project", params)
    run(["dvc", "repro"], project)
    for name in ("classification.csv", "verification.csv"):
        assert run(["python", "-m", "pipeline", "validate", f"submissions/{name}"], project).stdout.startswith("OK")
    folds = pd.read_csv(project / "folds/folds.csv")
    assert folds["path"].str.startswith("validation_classification/").all() and set(folds["fold"]) == {0, 1}
    history = pd.read_csv(project / "dvclive/fold0/plots/metrics/train_loss.tsv", sep="\t")
    assert len(history) == 3  # two phase-1 epochs, then the fine-tune's one
    metric = pd.read_csv(project / "dvclive/fold0/plots/metrics/train_metric.tsv", sep="\t")
    assert metric["step"].tolist() == [2]  # the triplet loss, logged in phase 2 only
    model = torch.load(project / "models/fold0/model.pt", weights_only=False)
    assert model["loss_params"]["metric"] == "triplet"  # the phase-2 model, rebuilt with its own loss by `embed`
    assert (project / "models/fold0/finetune/checkpoint.pt").is_file()
    metrics = json.loads((project / "metrics/ensemble.json").read_text())
    val = pd.read_csv(project / "data/index/val_classification.csv")
    assert 0 <= metrics["val_accuracy"] <= 1 and len(val) == 2 * len(folds.query("fold == 0"))
    # the user's folder is linked or copied, never modified
    assert (project / "data/raw/test_order_classification.txt").read_text() == (
        competition / "test_order_classification.txt"
    ).read_text()


def test_greyscale_pgm_imagefolder(tmp_path: Path):
    orl = shared_data("orl40") / "images"
    # the other fold layout: folds over the training images, validation classification held out from every model
    params = merge(
        TRAIN_ONLY,
        {
            "data": {"source": "imagefolder", "path": str(orl)},
            "imagefolder": {"crop_size": 32},
            "folds": {"holdout": "train"},
        },
    )
    project = make_project(tmp_path / "project", params)
    run(["dvc", "repro"], project)
    score = run(["python", "-m", "pipeline", "score", "submissions/verification.csv"], project).stdout
    assert '"auc"' in score
    assert pd.read_csv(project / "folds/folds.csv")["path"].str.startswith("train_data/").all()
