"""The competition-scale synthetic set every benchmark shares: rendered, indexed and decoded once, then cached.

Full scale (`scale=1`) follows the real HW2P2 Spring 2019 figures: 4,300 training identities (2,300 medium +
2,000 large) x 88 images = 378,400 training images, 100,000 validation and 900,000 test trials. `--scale`
shrinks identities and trials together (images per identity stay), keeping every trial file feasible.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import decode_manifest, load_array, read_manifest
from pipeline.index import build_index
from pipeline.io import write_json
from pipeline.params import DataParams, LayoutParams, SubmissionParams, SyntheticParams

log = logging.getLogger(__name__)

FULL = {
    "identities": 2300,  # train_data/medium
    "large_identities": 2000,  # train_data/large
    "train_images": 88,  # per identity: 4,300 x 88 = 378,400 training images
    "val_images": 2,
    "test_images": 2,
    "val_verification_identities": 200,
    "test_verification_identities": 1700,
    "verification_images": 24,  # 1,700 x 24 = 40,800 test verification images
    "val_trials": 100_000,
    "test_trials": 900_000,
}
SMALL_SCALE = 0.01  # --small: ~4,300 images and 9,000 test trials, rendered in seconds
CACHE_VERSION = 1  # bump when the rendered set changes shape (renders everything again)
INDEX_VERSION = 2  # bump when the index stage's manifests change (re-indexes the cached images only); 2: trial .txt
DECODED_SPLITS = ("train", "val_verification", "test_verification")


def _feasible_trials(wanted: int, identities: int, m: int) -> int:
    """The most trials `sample_trials` can draw (half same-identity, no pair twice), capped at `wanted`."""
    same = identities * (m * (m - 1) // 2)
    different = identities * (identities - 1) // 2 * m * m
    return max(2, min(wanted, 2 * same, 2 * different))


def synthetic_spec(scale: float, image_size: int) -> SyntheticParams:
    """Synthetic params for a fraction of the full competition."""
    if not 0 < scale <= 1:
        raise ValueError(f"--scale must lie in (0, 1], got {scale}")
    m = FULL["verification_images"]
    vv = max(2, math.ceil(FULL["val_verification_identities"] * scale))
    tv = max(2, math.ceil(FULL["test_verification_identities"] * scale))
    return SyntheticParams(
        identities=max(2, round(FULL["identities"] * scale)),
        large_identities=round(FULL["large_identities"] * scale),
        train_images=FULL["train_images"],
        val_images=FULL["val_images"],
        test_images=FULL["test_images"],
        val_verification_identities=vv,
        test_verification_identities=tv,
        verification_images=m,
        val_trials=_feasible_trials(round(FULL["val_trials"] * scale), vv, m),
        test_trials=_feasible_trials(round(FULL["test_trials"] * scale), tv, m),
        render_size=image_size,
    )


@dataclass
class BenchData:
    """Paths of one cached set: `raw` (competition root), `solution`, `index` (manifests), `decoded` (.npy)."""

    folder: Path
    synth: SyntheticParams
    layout: LayoutParams
    data: DataParams
    submission: SubmissionParams

    @property
    def raw(self) -> Path:
        return self.folder / "raw"

    @property
    def solution(self) -> Path:
        return self.folder / "solution"

    @property
    def index(self) -> Path:
        return self.folder / "index"

    @property
    def decoded(self) -> Path:
        return self.folder / "decoded"

    def manifest(self, name: str) -> pd.DataFrame:
        return read_manifest(self.index, name)

    def array(self, split: str) -> np.ndarray:
        return load_array(self.decoded / f"{split}.npy")

    def labels(self) -> tuple[np.ndarray, int]:
        """Class index of every training image (the index stage's class order) and the number of classes."""
        classes = self.manifest("classes")["identity"].tolist()
        class_of = {name: i for i, name in enumerate(classes)}
        return self.manifest("train")["identity"].map(class_of).to_numpy(dtype=np.int64, copy=True), len(classes)


def prepare(cache: Path, scale: float, image_size: int, seed: int = 0, workers: int | None = None) -> BenchData:
    """The set for `scale` under `cache`, rendering, indexing and decoding it only when not cached yet.

    A set is reused when its `spec.json` (written last, after everything else is complete) matches.
    """
    from pipeline.sources.synthetic import render_competition

    synth = synthetic_spec(scale, image_size)
    layout = LayoutParams()
    data = DataParams(image_size=image_size, train_subsets=["medium", "large"])
    submission = SubmissionParams()
    tag = "small" if scale == SMALL_SCALE else f"scale{scale:g}"
    bench = BenchData(Path(cache) / f"{tag}-{image_size}px", synth, layout, data, submission)
    spec = {
        "version": CACHE_VERSION,
        "seed": seed,
        "synthetic": synth.model_dump(mode="json"),
        "layout": layout.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
    }
    spec_file = bench.folder / "spec.json"
    cached = json.loads(spec_file.read_text()) if spec_file.exists() else None
    if cached == {**spec, "index_version": INDEX_VERSION}:
        log.info("using the cached bench set %s", bench.folder)
        return bench
    if cached is not None and {k: v for k, v in cached.items() if k != "index_version"} == spec:
        log.info("the cached bench set %s has older manifests: indexing its images again", bench.folder)
        _reindex(bench)
        write_json(spec_file, {**spec, "index_version": INDEX_VERSION})
        return bench
    if bench.folder.exists():
        log.info("%s holds another or an incomplete set: rebuilding it", bench.folder)
        shutil.rmtree(bench.folder)
    workers = workers or os.cpu_count() or 1
    log.info("rendering the bench set (scale %g) into %s with %d workers, once", scale, bench.folder, workers)
    render_competition(bench.raw, bench.solution, synth, layout, seed, workers=workers)
    build_index(bench.raw, bench.index, layout, data, submission)
    for split in DECODED_SPLITS:
        decode_manifest(bench.raw, bench.manifest(split), image_size, bench.decoded / f"{split}.npy")
    write_json(spec_file, {**spec, "index_version": INDEX_VERSION})
    return bench


def _reindex(bench: BenchData) -> None:
    """Write the manifests anew over the rendered images, decoding again only the splits whose image list changed."""
    before = {split: bench.manifest(split)["path"].tolist() for split in DECODED_SPLITS}
    shutil.rmtree(bench.index)
    build_index(bench.raw, bench.index, bench.layout, bench.data, bench.submission)
    for split in DECODED_SPLITS:
        if bench.manifest(split)["path"].tolist() != before[split]:
            decode_manifest(bench.raw, bench.manifest(split), bench.synth.render_size, bench.decoded / f"{split}.npy")
