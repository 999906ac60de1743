"""Pictures of faces as the model saw them: the decoded uint8 arrays, enlarged with square pixels, with captions.

One PNG per picture, numbered from 1 in a folder (`1.png`, `2.png`, ...): `dvc plots show` renders each numbered
file in order, and the number of files is the number of pictures (tests/test_plots_page.py counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import atomic_dir

FACE_INCHES = 1.28  # side of each face at DPI: 128 px, a 32 px face enlarged 4x, a 64 px one 2x
ROW_FACE_INCHES = 0.9  # side of each face in a row of faces (draw_rows)
DPI = 100
MARK_COLOUR = "#d62728"  # the frame of an image the model got wrong
NONE_PICTURE = "none.png"  # what a folder with nothing to show holds


@dataclass(frozen=True)
class FaceRow:
    """One row of a confusion picture: a caption, then images; `marked[i]` frames image i (a misclassified one)."""

    caption: str
    images: Sequence[np.ndarray]
    marked: Sequence[bool]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image: np.ndarray, marked: bool = False) -> None:
    ax.imshow(np.asarray(image), interpolation="nearest")  # the model's pixels, not a smoothed enlargement
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(marked)
        spine.set_color(MARK_COLOUR)
        spine.set_linewidth(3)


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else "..." + name[-(limit - 3) :]


def draw_pair(left: np.ndarray, right: np.ndarray, names: tuple[str, str], title: str, path: Path) -> None:
    """Two faces side by side, each captioned with its file name, under a title (score and threshold)."""
    plt = _pyplot()
    pad, top, bottom = 0.12, 0.5, 0.3
    width, height = 2 * FACE_INCHES + 3 * pad, FACE_INCHES + top + bottom
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    for i, (image, name) in enumerate(zip((left, right), names, strict=True)):
        x = pad + i * (FACE_INCHES + pad)
        ax = fig.add_axes((x / width, bottom / height, FACE_INCHES / width, FACE_INCHES / height))
        _show(ax, image)
        ax.set_xlabel(_short(name), fontsize=8, labelpad=2)
    fig.text(0.5, 1 - 0.06 / height, title, ha="center", va="top", fontsize=8.5)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)


def draw_rows(rows: Sequence[FaceRow], title: str, path: Path) -> None:
    """Rows of faces, each with a caption above it; marked images get a red frame."""
    plt = _pyplot()
    face, pad, caption, top = ROW_FACE_INCHES, 0.08, 0.22, 0.36
    columns = max(1, *(len(r.images) for r in rows))
    text = max(len(title) * 0.075, *(len(r.caption) * 0.068 for r in rows)) + 2 * pad  # inches the text needs
    width = max(columns * (face + pad) + pad, text)
    height = top + len(rows) * (caption + face + pad)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    fig.text(0.5, 1 - 0.06 / height, title, ha="center", va="top", fontsize=8.5)
    for r, row in enumerate(rows):
        y = height - top - (r + 1) * (caption + face + pad) + pad
        fig.text(pad / width, (y + face + 0.04) / height, row.caption, ha="left", va="bottom", fontsize=8)
        for c, (image, marked) in enumerate(zip(row.images, row.marked, strict=True)):
            ax = fig.add_axes((pad / width + c * (face + pad) / width, y / height, face / width, face / height))
            _show(ax, image, marked)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)


def draw_message(message: str, path: Path) -> None:
    """A picture holding one line of text (what an empty gallery shows instead)."""
    plt = _pyplot()
    fig = plt.figure(figsize=(3.2, 0.6), dpi=DPI)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=8)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)


def write_numbered(folder: Path, drawings: Sequence[Callable[[Path], None]], empty_message: str) -> None:
    """Call each drawing with the path `<i>.png` (from 1) of a new folder that replaces `folder` whole, so pictures
    of an earlier, longer run never stay behind. With no drawing, the folder holds `none.png` saying
    `empty_message`: git keeps no empty folder, and DVC would count a missing output as changed."""
    with atomic_dir(folder) as tmp:
        for i, draw in enumerate(drawings, start=1):
            draw(tmp / f"{i}.png")
        if not drawings:
            draw_message(empty_message, tmp / NONE_PICTURE)
