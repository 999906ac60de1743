"""Image decoding shared by the index (validation) and decode (cache) stages.

OpenCV decodes JPEG/PNG/PGM/BMP/WebP; IMREAD_COLOR turns greyscale, palette and RGBA images into 3 channels
and 16-bit ones into 8-bit. OpenCV only warns on a truncated JPEG and returns a partly grey image, so the
end-of-image marker is checked here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
T = TypeVar("T")

cv2.setNumThreads(1)  # parallelism comes from the thread pool below; nested OpenCV threads only contend


class BadImage(ValueError):
    """An image file that cannot be decoded; the message says why."""


def decode(data: bytes) -> np.ndarray:
    """Decode encoded bytes to an RGB uint8 HxWx3 array.

    Raises:
        BadImage: empty, not an image, or a truncated JPEG.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise BadImage("truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadImage("not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    with open(path, "rb") as f:
        return decode(f.read())


def fit(img: np.ndarray, size: int, center_crop: float = 1.0) -> np.ndarray:
    """Centre-crop a square of `center_crop` x the short side, then resize to size x size (area filter down)."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * center_crop)))
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    if side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return np.ascontiguousarray(img)


def parallel_map(fn: Callable[[T], object], items: Sequence[T], desc: str, workers: int | None = None) -> list:
    """Map over items with a thread pool (OpenCV and file reads release the GIL), in order, with a progress bar."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="img", mininterval=1.0))


def list_images(folder: Path) -> list[str]:
    """Image file names directly in `folder`, sorted; one directory scan, no stat per file."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith("."))
