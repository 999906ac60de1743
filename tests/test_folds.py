"""Fold assignment: stratified, deterministic, and the `folds` stage's choice of held-out images."""

import pandas as pd
import pytest

from pipeline.folds import assign_folds, read_fold_ids


def images(identities: int, per: int) -> pd.DataFrame:
    ids = [f"id{i}" for i in range(identities) for _ in range(per)]
    return pd.DataFrame({"path": [f"{x}/{n}.jpg" for n, x in enumerate(ids)], "identity": ids})


def test_each_identity_is_spread_over_the_folds_and_the_split_is_deterministic():
    table = images(10, 4)
    folds = assign_folds(table, 4, seed=3)
    assert folds["path"].equals(table["path"])
    assert (folds.groupby("identity")["fold"].nunique() == 4).all()
    assert folds.equals(assign_folds(table, 4, seed=3))
    assert not folds["fold"].equals(assign_folds(table, 4, seed=4)["fold"])


def test_two_images_per_identity_over_four_folds_still_cover_every_fold():
    folds = assign_folds(images(12, 2), 4, seed=0)  # the validation classification case: 2 images per identity
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    assert (folds.groupby("identity")["fold"].nunique() == 2).all()  # never both images in one fold


def test_fewer_images_than_folds_names_them():
    with pytest.raises(ValueError, match="folds.k=4 but only 3 validation classification images"):
        assign_folds(images(3, 1), 4, seed=0, what="validation classification images")


def test_fold_ids_refuse_a_folds_file_written_for_other_images(tmp_path):
    held = pd.DataFrame({"path": [f"v/{i}.jpg" for i in range(6)], "identity": ["a", "b", "c"] * 2})
    folds = assign_folds(held, 2, seed=0, what="validation classification images")
    folds.to_csv(tmp_path / "folds.csv", index=False)
    ids = read_fold_ids(tmp_path / "folds.csv", held, "val_classification.csv", "validation")
    assert ids.tolist() == folds["fold"].tolist()
    other = held.assign(path=held["path"].str.replace("v/", "t/"))
    with pytest.raises(ValueError, match=r"does not list the images of train\.csv \(folds\.holdout: train\)"):
        read_fold_ids(tmp_path / "folds.csv", other, "train.csv", "train")
