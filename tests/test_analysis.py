"""The `analyse` stage on a hand-made project folder: decoded arrays whose every image is one flat colour, so each
picture can be checked to hold the very pixels of the images it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.stages.analyse import main

SIDE = 16


def colour(i: int) -> tuple[int, int, int]:
    return (37 * i % 256, 101 * i % 256, 17 + 53 * i % 200)


def write_split(root: Path, split: str, manifest: pd.DataFrame) -> None:
    (root / "data/index").mkdir(parents=True, exist_ok=True)
    (root / "data/decoded").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(root / f"data/index/{split}.csv", index=False)
    offset = {"train": 0, "val_classification": 100, "val_verification": 200}[split]
    images = np.stack([np.full((SIDE, SIDE, 3), colour(offset + i), np.uint8) for i in range(len(manifest))])
    np.save(root / f"data/decoded/{split}.npy", images)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ids = ["007", "010", "3"]
    write_split(
        tmp_path,
        "train",
        pd.DataFrame(
            {"path": [f"t/{i}/{k}.jpg" for i in ids for k in range(4)], "identity": [i for i in ids for _ in range(4)]}
        ).assign(subset="medium"),
    )
    val = pd.DataFrame(
        {"path": [f"v/{i}/{k}.jpg" for i in ids for k in range(2)], "identity": [i for i in ids for _ in range(2)]}
    )
    write_split(tmp_path, "val_classification", val)
    names = [f"{100 + i}.jpg" for i in range(8)]
    write_split(tmp_path, "val_verification", pd.DataFrame({"path": [f"vv/{n}" for n in names], "name": names}))
    plots = tmp_path / "plots"
    plots.mkdir()
    rng = np.random.default_rng(0)
    trials = pd.DataFrame(
        {
            "trial": np.arange(1, 41),
            "a": rng.choice(names, 40),
            "b": rng.choice(names, 40),
            "label": np.tile([0, 1], 20),
        }
    )
    trials["ensemble"] = trials["label"] * 0.5 + rng.normal(0, 0.4, 40)
    trials["fold0"] = trials["ensemble"] + 0.1
    trials.to_csv(plots / "val_scores.csv", index=False)
    predicted = ["007", "010", "010", "007", "3", "007"]  # 007 once taken for 010, 010 once for 007, 3 once for 007
    pd.DataFrame({"path": val["path"], "identity": val["identity"], "predicted": predicted, "confidence": 0.5}).to_csv(
        plots / "val_predictions.csv", index=False
    )
    return tmp_path


def run_stage(project: Path, **analysis) -> int:
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump({"analysis": analysis}))
    return main(
        [
            "--params", str(params),
            "--scores", str(project / "plots/val_scores.csv"),
            "--predictions", str(project / "plots/val_predictions.csv"),
            "--index", str(project / "data/index"),
            "--decoded", str(project / "data/decoded"),
            "--out", str(project / "plots/analysis"),
        ]
    )  # fmt: skip


def pixels(path: Path) -> set[tuple[int, int, int]]:
    return {tuple(c) for c in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)}


def test_pictures_and_tables(project: Path):
    assert run_stage(project, gallery_pairs=3, confused_pairs=5, images_per_identity=2) == 0
    out = project / "plots/analysis"
    failures = pd.read_csv(out / "failures.csv", dtype={"a": str, "b": str})
    for kind in ("false_accepts", "false_rejects"):
        rows = failures[failures["kind"] == kind]
        assert 1 <= len(rows) <= 3
        assert sorted(p.name for p in (out / kind).iterdir()) == [f"{i}.png" for i in range(1, len(rows) + 1)]
        names = pd.read_csv(project / "data/index/val_verification.csv")["name"].tolist()
        first = rows.iloc[0]
        shown = pixels(out / kind / "1.png")  # the decoded pixels of both images, as the model saw them
        assert colour(200 + names.index(first["a"])) in shown and colour(200 + names.index(first["b"])) in shown

    pairs = pd.read_csv(out / "confused_pairs.csv", dtype=str)
    assert pairs[["a", "b", "count"]].values.tolist() == [["007", "010", "2"], ["007", "3", "1"]]
    assert sorted(p.name for p in (out / "confused_pairs").iterdir()) == ["1.png", "2.png"]
    shown = pixels(out / "confused_pairs/1.png")
    assert colour(100 + 1) in shown and colour(100 + 3) in shown  # the misclassified validation images
    assert {colour(0), colour(1), colour(4), colour(5)} <= shown  # two training images of each identity
    assert colour(2) not in shown  # not a third: images_per_identity

    accuracy = pd.read_csv(out / "identity_accuracy.csv", dtype={"identity": str})
    assert accuracy["identity"].tolist() == ["007", "010", "3"] and accuracy["accuracy"].tolist() == [0.5] * 3


def test_nothing_to_show_is_said_in_a_picture(project: Path):
    preds = pd.read_csv(project / "plots/val_predictions.csv", dtype=str)
    preds.assign(predicted=preds["identity"]).to_csv(project / "plots/val_predictions.csv", index=False)
    assert run_stage(project, confused_pairs=4) == 0
    assert [p.name for p in (project / "plots/analysis/confused_pairs").iterdir()] == ["none.png"]
    assert pd.read_csv(project / "plots/analysis/confused_pairs.csv").empty


def test_a_trial_naming_an_unknown_image_is_an_error(project: Path, caplog):
    scores = pd.read_csv(project / "plots/val_scores.csv")
    scores.loc[0, "a"] = "nope.jpg"
    scores.loc[0, "label"], scores.loc[0, "ensemble"] = 0, 99.0  # the worst false accept: drawn first
    scores.to_csv(project / "plots/val_scores.csv", index=False)
    assert run_stage(project) == 1
    assert "nope.jpg is not an image of val_verification" in caplog.text


def test_unknown_param_names_the_key(project: Path, caplog):
    assert run_stage(project, gallery_pair=3) == 1
    assert "analysis.gallery_pair: unknown key; did you mean 'analysis.gallery_pairs'?" in caplog.text
