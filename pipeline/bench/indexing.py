"""Benchmark 5, indexing: `pipeline.index.build_index` over every file of the set (layout scan, a decode of each
image, both trial files, the order file, manifests written) against the bound of decoding the same images with
the same thread pool and nothing else; `os.stat` calls counted (no stat per file); the strict 900k-line trial
parser against pandas' plain `read_csv` of the same file (no checks).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator

import pandas as pd

from pipeline import images
from pipeline.bench.common import Context, best_of
from pipeline.bench.report import Row
from pipeline.index import build_index
from pipeline.trial_files import read_trials

log = logging.getLogger(__name__)

MANIFESTS = ("train", "val_classification", "test_classification", "val_verification", "test_verification")


@contextlib.contextmanager
def count_stats() -> Iterator[itertools.count]:
    """Count Python-level `os.stat` / `os.lstat` calls (pathlib, os.path) while inside; `next(c)` reads it."""
    counter = itertools.count()  # next() on it is atomic under the GIL: safe from the index's thread pool
    stat, lstat = os.stat, os.lstat

    def counted_stat(*args, **kwargs):
        next(counter)
        return stat(*args, **kwargs)

    def counted_lstat(*args, **kwargs):
        next(counter)
        return lstat(*args, **kwargs)

    os.stat, os.lstat = counted_stat, counted_lstat
    try:
        yield counter
    finally:
        os.stat, os.lstat = stat, lstat


def run(ctx: Context) -> list[Row]:
    data = ctx.data
    paths = sorted(set().union(*(data.manifest(m)["path"] for m in MANIFESTS)))
    root = data.raw

    def bound() -> float:
        return best_of(lambda: images.parallel_map(lambda p: images.read_image(root / p), paths, desc="bound"), 1)[0]

    first = bound()
    with count_stats() as stats:
        start = time.perf_counter()
        summary = build_index(root, ctx.scratch / "index", data.layout, data.data, data.submission)
        seconds = time.perf_counter() - start
        n_stats = next(stats)
    bound_seconds = min(first, bound())  # one before and one after, so that neither gets a colder cache
    n_files = len(paths) + 3  # the images, both trial files and the order file
    trials_file = root / data.layout.test_trials
    parse_seconds, trials = best_of(lambda: read_trials(trials_file, labelled=False), ctx.repeats)
    pandas_seconds, plain = best_of(
        lambda: pd.read_csv(trials_file, sep=" ", header=None, names=["a", "b"], dtype=str, keep_default_na=False),
        ctx.repeats,
    )
    if len(plain) != len(trials):
        raise AssertionError(f"pandas read {len(plain)} trials, the pipeline {len(trials)}")
    per_file = n_stats / n_files
    return [
        Row(
            "indexing",
            f"build_index: {len(paths):,} images + {summary['val_trials'] + summary['test_trials']:,} trials",
            seconds,
            "s",
            bound_seconds,
            "bound: decode every image, same pool",
            seconds / bound_seconds,
            "<= 3x bound",
            seconds / bound_seconds <= 3,
            f"one run; the bound is the faster of one run before and one after; {images.__name__}.parallel_map "
            "with its default workers on both sides",
        ),
        Row(
            "indexing",
            "os.stat calls during build_index",
            n_stats,
            "",
            n_files,
            "files",
            per_file,
            "<= 0.01 per file",
            per_file <= 0.01,
            "Python-level os.stat/os.lstat (pathlib, os.path) counted; directory scans use d_type, no stat",
            {"stat_calls": n_stats, "files": n_files},
        ),
        Row(
            "indexing",
            f"strict trial parse ({len(trials):,} lines)",
            parse_seconds,
            "s",
            pandas_seconds,
            "pandas read_csv, no checks",
            parse_seconds / pandas_seconds,
            "<= 3x",
            parse_seconds / pandas_seconds <= 3,
            f"best of {ctx.repeats}; ours also refuses bad spacing, labels, paths and duplicates, naming the line",
        ),
    ]
