"""Decoded-image arrays and datasets.

The decode stage turns each manifest into one uint8 N x S x S x 3 ``.npy`` array (decoded once, memory-mapped by
training and embedding), so JPEG decoding never sits in the training loop. Datasets hand uint8 CHW tensors to
the model, which normalises on its own device.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

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
    """A manifest written by the index stage, all columns as strings (identity "007" stays "007")."""
    frame = pd.read_csv(index / f"{name}.csv", dtype=str, keep_default_na=False)
    if "label" in frame.columns:
        frame["label"] = frame["label"].astype(np.int8)
    return frame


def load_array(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample augmentation seed: the same image gets the same draw in the same epoch on every run,
    whatever the number of workers or an interruption in between."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class FaceDataset(Dataset):
    """Images from a decoded array (optionally a subset of rows), with labels and an albumentations transform."""

    def __init__(
        self,
        array: np.ndarray,
        rows: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        transform: A.BaseCompose | None = None,
        seed: int = 0,
    ):
        self.array = array
        self.rows = np.arange(len(array)) if rows is None else np.asarray(rows)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`key` is an index, or (epoch, index) from a sampler that tells workers the epoch."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        img = np.asarray(self.array[self.rows[i]])
        if self.transform is not None:
            self.transform.set_random_seed(sample_seed(self.seed, epoch, int(self.rows[i])))
            img = self.transform(image=img)["image"]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        y = self.labels[i] if self.labels is not None else torch.tensor(-1)
        return x, y
