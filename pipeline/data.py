"""Decoded-image arrays and manifests.

The decode stage turns each manifest into one uint8 N x S x S x 3 ``.npy`` array (decoded once, memory-mapped by
training and embedding), so JPEG decoding never sits in the training loop (`pipeline.dataset` reads them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import images
from pipeline.io import atomic_path

SPLITS = ("train", "val_classification", "test_classification", "val_verification", "test_verification")
PLACEHOLDER = 128  # grey, for test images skipped as unreadable (data.on_bad_image: skip)


def decode_manifest(root: Path, manifest: pd.DataFrame, size: int, out: Path) -> None:
    """Decode every image of a manifest (column ``path``, relative to root), resized to size x size (non-square
    images are centre-cropped to a square first), into ``out`` (.npy, uint8 NHWC)."""
    paths = manifest["path"].tolist()
    with atomic_path(out) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))

        def work(i: int) -> None:
            try:
                arr[i] = images.fit(images.read_image(root / paths[i]), size)
            except (images.BadImage, OSError):
                arr[i] = PLACEHOLDER  # index already reported it; only on_bad_image: skip gets here

        images.parallel_map(work, range(len(paths)), desc=f"decoding {out.stem}")
        arr.flush()  # the memmap must reach the temporary file before it is renamed into place


def read_manifest(index: Path, name: str) -> pd.DataFrame:
    """A CSV manifest written by the index stage, all columns as strings (identity "007" stays "007"). The trial
    manifests are trial files: `pipeline.trial_files.read_trial_manifest` reads them."""
    if name.endswith("_trials"):
        raise ValueError(f"{name} is a trial file, not a CSV manifest: read it with trial_files.read_trial_manifest")
    frame = pd.read_csv(index / f"{name}.csv", dtype=str, keep_default_na=False)
    if "label" in frame.columns:
        frame["label"] = frame["label"].astype(np.int8)
    return frame


def load_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")
