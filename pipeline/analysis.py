"""Where the model fails, as pictures and plot data (the `analyse` stage; README: Where the model fails).

From the ensemble stage's validation outputs it writes, under one folder:

- `false_accepts/`, `false_rejects/`: the worst trials of each kind at the EER threshold, one PNG per pair
  (`pipeline.failures`), and `failures.csv` listing them;
- `confused_pairs/`: the most confused identity pairs of the out-of-fold predictions, one PNG per pair with the
  misclassified validation images (framed) and training images of both identities, and `confused_pairs.csv`;
- `identity_accuracy.csv`: out-of-fold accuracy per identity, worst first (a bar chart in `dvc plots show`).

Faces are rows of the decode stage's arrays, found through the index manifests: the pixels the model saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import confusions, failures, gallery
from pipeline.data import load_array, read_manifest
from pipeline.io import atomic_path
from pipeline.params import AnalysisParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Faces:
    """A decoded split addressed by one column of its manifest (`name` of the verification images, `path` of the
    classification ones)."""

    array: np.ndarray
    rows: dict[str, int]
    split: str

    @classmethod
    def load(cls, index: Path, decoded: Path, split: str, key: str) -> Faces:
        manifest = read_manifest(index, split)
        array = load_array(decoded / f"{split}.npy")
        if len(array) != len(manifest):
            raise ValueError(
                f"{decoded / f'{split}.npy'} holds {len(array)} images but {index / f'{split}.csv'} lists "
                f"{len(manifest)}: re-run the decode stage"
            )
        return cls(array, {name: i for i, name in enumerate(manifest[key])}, split)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.rows:
            raise ValueError(f"{name} is not an image of {self.split} (re-run the ensemble stage after the index)")
        return np.asarray(self.array[self.rows[name]])


def training_rows(index: Path) -> dict[str, list[int]]:
    """Identity -> its rows in the training array, in manifest order."""
    train = read_manifest(index, "train")
    return {str(k): list(v) for k, v in train.groupby("identity", sort=False).indices.items()}


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def pair_title(row: pd.Series) -> str:
    """What a failure picture says: which error, its rank and trial, the score against the threshold."""
    if row["kind"] == "false_accepts":
        what, sign = "different people accepted", "\u2265"
    else:
        what, sign = "same person rejected", "<"
    return (
        f"{what} (#{row['rank']}, trial {row['trial']})\n"
        f"score {row['ensemble']:.4g} {sign} EER threshold {row['threshold']:.4g}"
    )


def draw_failures(worst: pd.DataFrame, faces: Faces, out: Path) -> None:
    for kind in failures.KINDS:
        rows = worst[worst["kind"] == kind]
        drawings = [
            partial(gallery.draw_pair, faces[r["a"]], faces[r["b"]], (r["a"], r["b"]), pair_title(r))
            for _, r in rows.iterrows()
        ]
        gallery.write_numbered(out / kind, drawings, f"no {kind.replace('_', ' ')} at the EER threshold")


def confusion_rows(
    pair: pd.Series, predictions: pd.DataFrame, val: Faces, train: np.ndarray, train_rows: dict[str, list[int]], k: int
) -> list[gallery.FaceRow]:
    """Per identity of the pair: its validation images taken for the other (framed), then `k` training images."""
    rows = []
    for this, other, n in ((pair["a"], pair["b"], int(pair["a_as_b"])), (pair["b"], pair["a"], int(pair["b_as_a"]))):
        wrong = [val[p] for p in confusions.misclassified_paths(predictions, this, other)[:k]]
        known = [np.asarray(train[i]) for i in train_rows.get(this, [])[:k]]
        shown = "framed; then training images" if wrong else "training images"
        caption = f"{this}: {n} taken for {other} ({shown})"
        rows.append(gallery.FaceRow(caption, [*wrong, *known], [True] * len(wrong) + [False] * len(known)))
    return rows


def analyse(
    scores_csv: Path, predictions_csv: Path, index: Path, decoded: Path, out: Path, p: AnalysisParams
) -> dict[str, object]:
    """Write every picture and table under `out`; returns what was drawn (for the log)."""
    table = failures.read_scores(str(scores_csv))
    threshold, worst = failures.worst_failures(table, p.gallery_pairs)
    _write_csv(worst, out / "failures.csv")
    draw_failures(worst, Faces.load(index, decoded, "val_verification", "name"), out)

    predictions = confusions.read_predictions(str(predictions_csv))
    per_identity = confusions.identity_accuracy(predictions)
    _write_csv(per_identity, out / "identity_accuracy.csv")
    pairs = confusions.confused_pairs(predictions, p.confused_pairs)
    _write_csv(pairs, out / "confused_pairs.csv")
    val = Faces.load(index, decoded, "val_classification", "path")
    train, train_rows = load_array(decoded / "train.npy"), training_rows(index)
    drawings = []
    for _, pair in pairs.iterrows():
        rows = confusion_rows(pair, predictions, val, train, train_rows, p.images_per_identity)
        times = "once" if pair["count"] == 1 else f"{pair['count']} times"
        title = f"{pair['a']} and {pair['b']} confused {times} (validation, out of fold)"
        drawings.append(partial(gallery.draw_rows, rows, title))
    gallery.write_numbered(out / "confused_pairs", drawings, "no confused identities in the validation predictions")

    labels = table["label"].to_numpy()
    accepted = table[failures.SCORE_COLUMN].to_numpy() >= threshold
    return {
        "threshold": threshold,
        "false_accepts": int(((labels == 0) & accepted).sum()),
        "false_rejects": int(((labels == 1) & ~accepted).sum()),
        "drawn": {kind: int((worst["kind"] == kind).sum()) for kind in failures.KINDS},
        "confused_pairs": len(pairs),
        "worst_identity": per_identity.iloc[0].to_dict() if len(per_identity) else None,
    }
