"""The index stage: layout problems and bad images are reported together, with paths, before training."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.data import decode_manifest, load_array, read_manifest
from pipeline.index import LayoutError, build_index, natural_key
from pipeline.params import DataParams, LayoutParams, SubmissionParams, SyntheticParams
from pipeline.sources.synthetic import render_competition
from pipeline.trial_files import checked_trials, read_trial_manifest, read_trials

LAYOUT = LayoutParams()
SMALL = SyntheticParams(
    identities=6,
    large_identities=1,
    train_images=4,
    val_images=1,
    test_images=1,
    val_verification_identities=3,
    test_verification_identities=3,
    verification_images=3,
    val_trials=8,
    test_trials=8,
)


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    render_competition(root, tmp_path / "solution", SMALL, LAYOUT, seed=3)
    return root


def index(root: Path, **data) -> dict:
    return build_index(root, root.parent / "index", LAYOUT, DataParams(**data), SubmissionParams())


def test_manifests_of_a_good_competition(competition):
    summary = index(competition)
    out = competition.parent / "index"
    assert summary["train"] == 6 * 4 and summary["identities"] == 6
    classes = read_manifest(out, "classes")["identity"].tolist()
    assert classes == sorted(classes, key=natural_key) and classes[:3] == ["0", "1", "2"]
    order = (competition / LAYOUT.test_order).read_text().split()
    test = read_manifest(out, "test_classification")
    assert test["id"].tolist() == [n.removesuffix(".jpg") for n in order]
    trials = read_trial_manifest(out, "val_trials")
    assert set(trials["label"]) == {0, 1}
    assert read_manifest(out, "bad_images").empty


def test_large_subset_adds_identities(competition):
    assert index(competition, train_subsets=["medium", "large"])["identities"] == 7


def test_missing_parts_are_listed_together(competition):
    (competition / LAYOUT.test_order).unlink()
    (competition / LAYOUT.val_trials).unlink()
    with pytest.raises(LayoutError) as err:
        index(competition)
    assert "test_order_classification.txt: missing" in str(err.value)
    assert "validation_trials_verification.txt: missing" in str(err.value)


def test_order_file_naming_an_absent_image(competition):
    order = competition / LAYOUT.test_order
    order.write_text(order.read_text() + "999.jpg\n")
    with pytest.raises(LayoutError, match=r"test_order_classification.txt:\d+: '999.jpg' is not in"):
        index(competition)


def test_trial_naming_an_absent_image(competition):
    trials = competition / LAYOUT.test_trials
    trials.write_text(trials.read_text() + "nope.jpg other.jpg\n")
    with pytest.raises(LayoutError, match="nope.jpg"):
        index(competition)


def test_validation_identity_without_training_images(competition):
    (competition / LAYOUT.val_classification_dir / "0").rename(competition / LAYOUT.val_classification_dir / "ghost")
    with pytest.raises(LayoutError, match="have no training images"):
        index(competition)


def _write(path: Path, img: np.ndarray, ext: str = ".png", params: list[int] | None = None) -> None:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    path.write_bytes(buf.tobytes())


def test_convertible_images_are_converted(competition):
    """Greyscale, RGBA, palette-free 16-bit PNG and odd sizes decode to size x size x 3."""
    folder = competition / LAYOUT.train_dir / "medium" / "0"
    rng = np.random.default_rng(0)
    _write(folder / "grey.png", rng.integers(0, 255, (40, 30), dtype=np.uint8))
    _write(folder / "rgba.png", rng.integers(0, 255, (32, 32, 4), dtype=np.uint8))
    _write(folder / "deep.png", rng.integers(0, 65535, (32, 32, 3), dtype=np.uint16))
    _write(folder / "tall.jpg", rng.integers(0, 255, (100, 17, 3), dtype=np.uint8), ".jpg")
    index(competition)
    out = competition.parent / "index"
    train = read_manifest(out, "train")
    decode_manifest(competition, train, 32, competition.parent / "train.npy")
    arr = load_array(competition.parent / "train.npy")
    assert arr.shape == (len(train), 32, 32, 3)
    deep = train.index[train["path"].str.endswith("deep.png")][0]
    assert arr[deep].max() > 100  # 16-bit scaled into 8 bits, not clipped to black or white


def _break_images(competition: Path) -> list[Path]:
    folder = competition / LAYOUT.train_dir / "medium" / "1"
    good = sorted(folder.iterdir())[0].read_bytes()
    broken = [folder / "empty.jpg", folder / "text.jpg", folder / "truncated.jpg"]
    broken[0].write_bytes(b"")
    broken[1].write_text("this is not an image")
    broken[2].write_bytes(good[: len(good) // 2])
    return broken


def test_bad_images_fail_with_the_whole_list(competition):
    broken = _break_images(competition)
    with pytest.raises(LayoutError) as err:
        index(competition)
    message = str(err.value)
    assert "3 unreadable images" in message
    for path in broken:
        assert str(path) in message
    assert "empty file" in message and "truncated JPEG" in message and "not a readable image" in message
    assert not (competition.parent / "index").exists()  # nothing half-written
    report = pd.read_csv(competition.parent / "index.bad_images.csv")
    assert len(report) == 3
    for path in broken:  # fixed: the next run succeeds and the stale list goes
        path.unlink()
    index(competition)
    assert not (competition.parent / "index.bad_images.csv").exists()


def test_bad_images_skipped_on_request(competition, caplog):
    _break_images(competition)
    summary = index(competition, on_bad_image="skip")
    out = competition.parent / "index"
    assert f"listed in {out / 'bad_images.csv'}" in caplog.text
    assert summary["train"] == 6 * 4 and summary["bad_images"] == 3
    assert not read_manifest(out, "train")["path"].str.contains("empty|text|truncated").any()
    assert len(read_manifest(out, "bad_images")) == 3


def test_trial_manifests_are_the_normalised_trial_files(competition):
    """A BOM, CRLF endings and trailing blank lines in the source are gone; the frame read back is the one
    `read_trials` gives for the source, marked as checked for the submission writer."""
    for name in (LAYOUT.val_trials, LAYOUT.test_trials):
        path = competition / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n  \r\n")
    index(competition)
    out = competition.parent / "index"
    for name, source, labelled in (("val_trials", LAYOUT.val_trials, True), ("test_trials", LAYOUT.test_trials, False)):
        text = (out / f"{name}.txt").read_bytes()
        assert not text.startswith(b"\xef\xbb\xbf") and b"\r" not in text
        assert text.endswith(b"\n") and not text.endswith(b"\n\n")
        frame = read_trial_manifest(out, name)
        expected = read_trials(competition / source, labelled=labelled)
        assert frame.columns.tolist() == expected.columns.tolist()
        for column in expected.columns:
            assert frame[column].astype(object).tolist() == expected[column].astype(object).tolist()
        assert isinstance(frame["a"].dtype, pd.CategoricalDtype) and checked_trials(frame)
        assert frame.attrs["source"] == str(out / f"{name}.txt")  # errors name the manifest's own lines
    with pytest.raises(ValueError, match="read_trial_manifest"):
        read_manifest(out, "val_trials")  # a CSV reader would fail on a missing file, without saying why
    with pytest.raises(ValueError, match="unknown trial manifest 'train'"):
        read_trial_manifest(out, "train")


def test_skipping_images_may_not_leave_one_trial_label(competition):
    """Every validation trial names a verification image; with them all unreadable and skipped, no trial is
    left, and the index says so instead of writing an empty trial manifest."""
    for path in (competition / LAYOUT.val_verification_dir).iterdir():
        path.write_text("not an image")
    with pytest.raises(LayoutError, match="no longer hold both labels"):
        index(competition, on_bad_image="skip")
    assert not (competition.parent / "index").exists()
