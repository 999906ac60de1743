"""The embeddings file of one fold (`embeddings/fold<k>.npz`): its one writer (the embed stage) and reader (the
ensemble stage and the bench). Keys: `classes`; `<split>_names` and `<split>_embeddings` (L2-normalised) of the
verification splits; `<split>_ids`, `<split>_embeddings` and `<split>_probs` (the head's class probabilities) of the
classification splits; `train_ids` and `train_embeddings` of the training images (the class prototypes of
`pipeline.classify`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path

VERIFICATION_SPLITS = ("val_verification", "test_verification")
# Classification splits and the manifest column that identifies each image: the validation images by path (the
# folds name them so), the test images by submission id.
CLASSIFICATION_SPLITS = {"val_classification": "path", "test_classification": "id"}
LABELLED_SPLITS = {"train": "path"}  # embedded for the prototypes; no head probabilities are kept
ALIGNED_KEYS = ("classes", "val_verification_names", "test_verification_names", "test_classification_ids")


@dataclass
class FoldEmbeddings:
    """One fold's embed output."""

    name: str
    data: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: Path) -> FoldEmbeddings:
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no embeddings for this fold: run its embed stage") from None
        missing = [k for k in ALIGNED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{path}: not an embeddings file of this pipeline (no {', '.join(missing)})")
        return cls(Path(path).stem, data)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **self.data)

    @property
    def classes(self) -> list[str]:
        return self.data["classes"].tolist()

    def embeddings(self, split: str) -> np.ndarray:
        key = f"{split}_embeddings"
        if key not in self.data:  # written before the classification and training splits were embedded
            raise ValueError(f"{self.name}.npz has no {key}: re-run its embed stage")
        return self.data[key]

    def names(self, split: str) -> list[str]:
        return self.data[f"{split}_names"].tolist()

    def probs(self, split: str) -> np.ndarray:
        return self.data[f"{split}_probs"]

    def ids(self, split: str) -> list[str]:
        return self.data[f"{split}_ids"].tolist()


def check_aligned(folds: list[FoldEmbeddings]) -> None:
    """The folds were embedded from the same images and classes, so their rows can be combined."""
    first = folds[0]
    for other in folds[1:]:
        for key in ALIGNED_KEYS:
            if not np.array_equal(first.data[key], other.data[key]):
                raise ValueError(f"{other.name} and {first.name} disagree on {key}: re-run the embed stages")
