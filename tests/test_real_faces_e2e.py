"""Real faces end to end (skipped where ../shared/data is absent): a 64 px HW2P2-layout folder through
`data.source: local`, and greyscale PGMs through `data.source: imagefolder`."""

from pathlib import Path

import pytest

from pipeline.params import ImagefolderParams, LayoutParams
from pipeline.sources.imagefolder import build_competition
from tests.conftest import TINY_PARAMS, make_project, merge, run, shared_data

pytestmark = pytest.mark.slow

TRAIN_ONLY = merge({k: v for k, v in TINY_PARAMS.items() if k != "synthetic"}, {"folds": {"train": [0]}})


def test_local_hw2p2_folder_of_64px_real_faces(tmp_path: Path):
    lfw = shared_data("lfw158") / "images"
    competition = tmp_path / "hw2p2"
    build_competition(lfw, competition, tmp_path / "answers", ImagefolderParams(center_crop=0.48), LayoutParams())
    project = make_project(
        tmp_path / "project", merge(TRAIN_ONLY, {"data": {"source": "local", "path": str(competition)}})
    )
    run(["dvc", "repro"], project)
    for name in ("classification.csv", "verification.csv"):
        assert run(["python", "-m", "pipeline", "validate", f"submissions/{name}"], project).stdout.startswith("OK")
    # the user's folder is linked or copied, never modified
    assert (project / "data/raw/test_order_classification.txt").read_text() == (
        competition / "test_order_classification.txt"
    ).read_text()


def test_greyscale_pgm_imagefolder(tmp_path: Path):
    orl = shared_data("orl40") / "images"
    params = merge(TRAIN_ONLY, {"data": {"source": "imagefolder", "path": str(orl)}, "imagefolder": {"image_size": 32}})
    project = make_project(tmp_path / "project", params)
    run(["dvc", "repro"], project)
    score = run(["python", "-m", "pipeline", "score", "submissions/verification.csv"], project).stdout
    assert '"auc"' in score
