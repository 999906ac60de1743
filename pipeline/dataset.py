"""The training dataset: rows of a decoded array, augmented per sample with draws that depend only on (seed, epoch,
image). Kept apart from `pipeline.data` so that the decode stage does not depend on the augmentation code."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline import augment


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
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch of samples, as `__getitem__` gives them one by one (the DataLoader calls this per batch): one
        read of the array and one layout change per batch instead of per image."""
        pairs = [key if isinstance(key, tuple) else (0, key) for key in keys]
        index = np.array([i for _, i in pairs], dtype=np.intp)
        rows = self.rows[index]
        batch = np.asarray(self.array[rows])  # one read of the array for the batch
        if self.transform is not None:
            out = []
            for (epoch, _), row, img in zip(pairs, rows.tolist(), batch, strict=True):
                augment.reseed(self.transform, sample_seed(self.seed, epoch, row))
                out.append(self.transform(image=img)["image"])
            batch = np.stack(out)
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        y = self.labels[index] if self.labels is not None else torch.full((len(keys),), -1)
        return list(zip(x.unbind(0), y.unbind(0), strict=True))
