"""The images a fold model trains on, drawn from several decoded arrays (train, and with `folds.holdout:
validation` the validation classification images) without copying the memory-mapped arrays into one."""

from __future__ import annotations

import numpy as np


class StackedImages:
    """Read-only row access to arrays stacked along the first axis, as if concatenated.

    Only what the training dataset and the evaluation need: ``len``, ``shape``, ``dtype`` and indexing by an
    integer or an integer array (fancy indexing copies the selected rows, like numpy's).
    """

    def __init__(self, *arrays: np.ndarray):
        if not arrays:
            raise ValueError("StackedImages needs at least one array")
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"arrays of different image shapes cannot be stacked: {sorted(shapes)}")
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.shape = (int(self.starts[-1]), *arrays[0].shape[1:])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} stacked images")
            part = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self.arrays[part][i - self.starts[part]]
        rows = np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} stacked images")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p, array in enumerate(self.arrays):
            mine = np.flatnonzero(part == p)
            if len(mine):
                out[mine] = array[rows[mine] - self.starts[p]]
        return out
