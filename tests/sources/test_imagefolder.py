"""The imagefolder source on real faces (../shared/data): deterministic, identity-disjoint, balanced splits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.images import read_image
from pipeline.params import ImagefolderParams, LayoutParams
from pipeline.sources.imagefolder import balanced_trials, build_competition, split_identities
from tests.conftest import shared_data

LAYOUT = LayoutParams()


def build(src: Path, out: Path, **params) -> dict:
    return build_competition(src, out / "raw", out / "solution", ImagefolderParams(**params), LAYOUT)


def identities_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


def test_lfw_competition_layout_and_disjoint_identities(tmp_path):
    lfw = shared_data("lfw158") / "images"
    summary = build(lfw, tmp_path, center_crop=0.48, crop_size=64)
    raw = tmp_path / "raw"
    train_ids = identities_in(raw / LAYOUT.train_dir / "medium")
    assert train_ids == identities_in(raw / LAYOUT.val_classification_dir)
    assert summary["classification_identities"] == len(train_ids) == round(158 * 0.7)
    verification_files = list((raw / LAYOUT.val_verification_dir).iterdir())
    assert all(p.stem.isdigit() for p in verification_files)  # anonymous names: they reveal no identity
    assert len(verification_files) + len(list((raw / LAYOUT.test_verification_dir).iterdir())) == 10 * (158 - 111)
    solution = pd.read_csv(tmp_path / "solution/verification_solution.csv")
    assert solution["label"].mean() == pytest.approx(0.5, abs=0.01)
    val_trials = (raw / LAYOUT.val_trials).read_text().splitlines()
    assert len(val_trials) == summary["val_trials"] and len(solution) == summary["test_trials"]
    img = read_image(raw / LAYOUT.test_classification_dir / "0.jpg")
    assert img.shape == (64, 64, 3)
    order = (raw / LAYOUT.test_order).read_text().split()
    cls_solution = pd.read_csv(tmp_path / "solution/classification_solution.csv", dtype=str)
    assert cls_solution["id"].tolist() == [n.removesuffix(".jpg") for n in order]
    assert set(cls_solution["label"]) <= train_ids


def test_splits_are_deterministic_and_seeded(tmp_path):
    names = [f"person{i}" for i in range(40)]
    a = split_identities(names, ImagefolderParams())
    assert a == split_identities(names, ImagefolderParams())
    assert a != split_identities(names, ImagefolderParams(seed=1))
    cls, val, test = a
    assert not (set(cls) & set(val)) and not (set(cls) & set(test)) and not (set(val) & set(test))
    assert len(cls) == 28 and len(val) + len(test) == 12


def test_trials_are_balanced_and_capped():
    groups = [[f"{g}_{i}.jpg" for i in range(6)] for g in range(5)]  # 15 same pairs each
    trials = balanced_trials(groups, cap=4, rng=np.random.default_rng(0))
    same = [t for t in trials if t[2] == 1]
    assert len(same) == 5 * 4 and len(trials) == 2 * len(same)
    assert all(a.split("_")[0] == b.split("_")[0] for a, b, _ in same)
    assert all(a.split("_")[0] != b.split("_")[0] for a, b, y in trials if y == 0)
    assert len({(a, b) for a, b, _ in trials}) == len(trials)


def test_greyscale_pgm_source(tmp_path):
    orl = shared_data("orl40") / "images"
    build(orl, tmp_path, crop_size=32)
    img = read_image(next((tmp_path / "raw" / LAYOUT.test_classification_dir).iterdir()))
    assert img.shape == (32, 32, 3)
    assert np.array_equal(img[..., 0], img[..., 1])  # grey stays grey in three channels


def test_same_output_twice(tmp_path):
    orl = shared_data("orl40") / "images"
    build(orl, tmp_path / "a", crop_size=32)
    build(orl, tmp_path / "b", crop_size=32)
    for rel in (LAYOUT.val_trials, LAYOUT.test_trials, LAYOUT.test_order):
        assert (tmp_path / "a/raw" / rel).read_bytes() == (tmp_path / "b/raw" / rel).read_bytes()


def test_local_folder_is_linked_not_modified(tmp_path):
    from pipeline.sources.local import import_local

    orl = shared_data("orl40") / "images"
    build(orl, tmp_path / "built", crop_size=32)
    import_local(tmp_path / "built" / "raw", LAYOUT, tmp_path / "raw")
    src = tmp_path / "built" / "raw" / LAYOUT.test_order
    dst = tmp_path / "raw" / LAYOUT.test_order
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino == src.stat().st_ino  # same file system: a hard link, no copy
