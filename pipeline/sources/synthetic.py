"""The synthetic source: render a complete HW2P2-layout face competition, with its hidden answers beside it.

Every identity and every image has its own random stream, derived from (seed, split, identity, image index),
so the output is byte-identical whatever the number of worker processes. Identities are numbered globally:
classification identities ``0..N-1``, then the `large` training identities, then the validation and test
verification identities, so all four groups are disjoint by construction.

``python -m pipeline.sources.synthetic --out DIR --solution DIR`` renders one for benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from pipeline.io import atomic_dir
from pipeline.params import LayoutParams, SyntheticParams
from pipeline.sources.synthetic_faces import Identity, make_identity, render_jpeg

log = logging.getLogger(__name__)

# Split codes: part of every image's seed, so that image k of one split never repeats image k of another.
TRAIN, LARGE, VAL, TEST, VAL_VERIFICATION, TEST_VERIFICATION = range(6)
_TRAITS, _IMAGES, _LAYOUT = range(3)  # seed domains: identity traits, images, shuffles/names/trials
IDENTITY_MAP = "_identity_map.csv"  # in solution_dir: path,split,identity of every image (for tests and checks)
CLASSIFICATION_SOLUTION = "classification_solution.csv"
VERIFICATION_SOLUTION = "verification_solution.csv"
_SPLIT_NAMES = ("train", "large", "val", "test", "val_verification", "test_verification")


class _Image(NamedTuple):
    split: int
    identity: int  # global identity number
    index: int  # image number within (split, identity)
    path: str  # relative to the competition root, '/'-separated


def identity_traits(seed: int, identity: int) -> Identity:
    """The traits of global identity `identity` under `seed`."""
    return make_identity(np.random.default_rng([seed, _TRAITS, identity]))


def image_jpeg(seed: int, image: _Image, identity: Identity, synth: SyntheticParams) -> bytes:
    rng = np.random.default_rng([seed, _IMAGES, image.split, image.identity, image.index])
    return render_jpeg(identity, rng, synth.render_size, synth.difficulty, synth.jpeg_quality)


def _pair_from_index(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode indices into the row-major enumeration of pairs (i, j), i < j < n, without an O(n^2) table."""
    b = 2 * n - 1
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * k, 0.0))) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)

    def start(r: np.ndarray) -> np.ndarray:
        return r * (2 * n - r - 1) // 2

    # Float rounding can put i one row off either way: fix it exactly in integers.
    i = np.where(start(i) > k, i - 1, i)
    i = np.where((i + 1 <= n - 2) & (start(i + 1) <= k), i + 1, i)
    return i, k - start(i) + i + 1


def sample_trials(
    rng: np.random.Generator, identities: int, per_identity: int, n_trials: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced verification trials over `identities` x `per_identity` images (image i is of identity i // m).

    Half the trials (rounded down) pair two images of one identity, drawn without replacement from all such
    pairs; the rest pair images of two distinct identities, also without replacement, so no pair repeats in
    either order. Each pair's order is random, and so is the order of the trials.

    Returns:
        (a, b, label): image indices of each trial's two images and 1 for same identity, else 0.

    Raises:
        ValueError: when there are fewer distinct pairs than requested.
    """
    m = per_identity
    n_pos = n_trials // 2
    n_neg = n_trials - n_pos
    pairs_per = m * (m - 1) // 2
    total_pos = identities * pairs_per
    total_neg = identities * (identities - 1) // 2 * m * m
    if n_pos > total_pos or n_neg > total_neg:
        raise ValueError(
            f"{n_trials} trials need {n_pos} same-identity and {n_neg} different-identity pairs, but "
            f"{identities} identities x {m} images have only {total_pos} and {total_neg}: raise "
            "synthetic.verification_images or the verification identities, or lower the trials"
        )
    iu, ju = np.triu_indices(m, 1)
    pick = rng.choice(total_pos, size=n_pos, replace=False)
    v, p = np.divmod(pick, pairs_per)
    pos_a, pos_b = v * m + iu[p], v * m + ju[p]
    pick = rng.choice(total_neg, size=n_neg, replace=False)
    pair, r = np.divmod(pick, m * m)
    va, vb = _pair_from_index(pair, identities)
    ra, rb = np.divmod(r, m)
    a = np.concatenate([pos_a, va * m + ra])
    b = np.concatenate([pos_b, vb * m + rb])
    label = np.concatenate([np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)])
    swap = rng.random(n_trials) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    order = rng.permutation(n_trials)
    return a[order], b[order], label[order]


def _verification_names(rng: np.random.Generator, count: int) -> list[str]:
    """Unique random file names with at least 6 digits, which say nothing about identity or order."""
    digits = max(6, len(str(count * 10)))
    low = 10 ** (digits - 1)
    return [f"{n}.jpg" for n in (rng.choice(9 * low, size=count, replace=False) + low).tolist()]


def _check(root: Path, solution_dir: Path, synth: SyntheticParams) -> None:
    r, s = root.resolve(), solution_dir.resolve()
    if r == s or r in s.parents or s in r.parents:
        raise ValueError(
            f"the solution folder {solution_dir} must lie outside the competition root {root} and vice versa"
        )
    m = synth.verification_images
    for name, ids, trials in (
        ("val", synth.val_verification_identities, synth.val_trials),
        ("test", synth.test_verification_identities, synth.test_trials),
    ):
        if trials // 2 > ids * (m * (m - 1) // 2):
            raise ValueError(
                f"synthetic.{name}_trials={trials} needs {trials // 2} same-identity pairs, but "
                f"synthetic.{name}_verification_identities={ids} x verification_images={m} give only "
                f"{ids * (m * (m - 1) // 2)}"
            )
        if trials - trials // 2 > ids * (ids - 1) // 2 * m * m:
            raise ValueError(f"synthetic.{name}_trials={trials}: too few different-identity pairs for {ids} identities")


def _chunks(images: Sequence[_Image], size: int) -> Iterator[list[_Image]]:
    for start in range(0, len(images), size):
        yield list(images[start : start + size])


def _render_chunk(root: str, seed: int, synth: SyntheticParams, images: list[_Image]) -> int:
    """Render and write a run of images (grouped by identity, so traits are built once per identity)."""
    cache: dict[int, Identity] = {}
    for image in images:
        ident = cache.get(image.identity)
        if ident is None:
            cache.clear()
            ident = cache[image.identity] = identity_traits(seed, image.identity)
        data = image_jpeg(seed, image, ident, synth)
        with open(os.path.join(root, image.path), "wb") as f:
            f.write(data)
    return len(images)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend


def _render_all(root: Path, seed: int, synth: SyntheticParams, images: list[_Image], workers: int) -> None:
    chunk = max(64, min(1024, math.ceil(len(images) / max(1, workers * 8))))
    with tqdm(total=len(images), unit="img", desc="render faces", dynamic_ncols=True) as bar:
        if workers <= 1:
            for part in _chunks(images, chunk):
                bar.update(_render_chunk(str(root), seed, synth, part))
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            futures = [pool.submit(_render_chunk, str(root), seed, synth, part) for part in _chunks(images, chunk)]
            for future in as_completed(futures):
                bar.update(future.result())


def _write_lines(path: Path, header: str | None, lines: Sequence[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((f"{header}\n" if header else "") + text, encoding="utf-8", newline="")


def render_competition(
    root: Path, solution_dir: Path, synth: SyntheticParams, layout: LayoutParams, seed: int, workers: int = 1
) -> dict[str, int]:
    """Render a complete competition into `root` and its hidden answers into `solution_dir`.

    Both folders appear whole or not at all: each is rendered into a temporary folder beside it and renamed
    (an existing one is replaced). The files are the same for a given seed whatever `workers` is; with more
    than one worker, images are rendered by spawned processes, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard.

    Returns:
        Counts of identities, images and trials written.
    """
    root, solution_dir = Path(root), Path(solution_dir)
    _check(root, solution_dir, synth)
    started = time.perf_counter()
    n_cls, n_large = synth.identities, synth.large_identities
    n_vv, n_tv, m = synth.val_verification_identities, synth.test_verification_identities, synth.verification_images
    first_vv = n_cls + n_large
    first_tv = first_vv + n_vv

    images: list[_Image] = []
    train = layout.train_dir
    for gid in range(n_cls):
        images += [
            _Image(TRAIN, gid, k, f"{train}/medium/{gid}/{gid:04d}_{k:02d}.jpg") for k in range(synth.train_images)
        ]
    for gid in range(n_cls, first_vv):
        images += [
            _Image(LARGE, gid, k, f"{train}/large/{gid}/{gid:04d}_{k:02d}.jpg") for k in range(synth.train_images)
        ]
    for gid in range(n_cls):
        images += [
            _Image(VAL, gid, k, f"{layout.val_classification_dir}/{gid}/{gid:04d}_{synth.train_images + k:02d}.jpg")
            for k in range(synth.val_images)
        ]

    # Test classification: n.jpg in a shuffled identity order; the order file lists them shuffled again.
    n_test = n_cls * synth.test_images
    owner = np.random.default_rng([seed, _LAYOUT, 0]).permutation(n_test)
    test_gid, test_k = np.divmod(owner, synth.test_images)
    images += [
        _Image(TEST, gid, k, f"{layout.test_classification_dir}/{n}.jpg")
        for n, (gid, k) in enumerate(zip(test_gid.tolist(), test_k.tolist(), strict=True))
    ]
    order = np.random.default_rng([seed, _LAYOUT, 1]).permutation(n_test).tolist()

    # Verification: random unique names, so neither name nor order reveals identity.
    names = _verification_names(np.random.default_rng([seed, _LAYOUT, 2]), (n_vv + n_tv) * m)
    val_names, test_names = names[: n_vv * m], names[n_vv * m :]
    for v in range(n_vv):
        images += [
            _Image(VAL_VERIFICATION, first_vv + v, k, f"{layout.val_verification_dir}/{val_names[v * m + k]}")
            for k in range(m)
        ]
    for v in range(n_tv):
        images += [
            _Image(TEST_VERIFICATION, first_tv + v, k, f"{layout.test_verification_dir}/{test_names[v * m + k]}")
            for k in range(m)
        ]
    va, vb, vlabel = sample_trials(np.random.default_rng([seed, _LAYOUT, 3]), n_vv, m, synth.val_trials)
    ta, tb, tlabel = sample_trials(np.random.default_rng([seed, _LAYOUT, 4]), n_tv, m, synth.test_trials)
    val_lines = [
        f"{val_names[a]} {val_names[b]} {y}" for a, b, y in zip(va.tolist(), vb.tolist(), vlabel.tolist(), strict=True)
    ]
    test_lines = [f"{test_names[a]} {test_names[b]}" for a, b in zip(ta.tolist(), tb.tolist(), strict=True)]

    log.info("rendering %d images of %d identities into %s", len(images), first_tv + n_tv, root)
    with atomic_dir(solution_dir) as sol_tmp, atomic_dir(root) as tmp:
        for folder in {str(Path(image.path).parent) for image in images}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        (tmp / train / "large").mkdir(parents=True, exist_ok=True)  # present even without large identities
        for folder in (layout.test_classification_dir, layout.val_verification_dir, layout.test_verification_dir):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        # Rendered grouped by identity (traits are built once per run of an identity); names are unaffected.
        _render_all(tmp, seed, synth, sorted(images, key=lambda im: (im.identity, im.split, im.index)), workers)
        _write_lines(tmp / layout.test_order, None, [f"{n}.jpg" for n in order])
        _write_lines(tmp / layout.val_trials, None, val_lines)
        _write_lines(tmp / layout.test_trials, None, test_lines)
        _write_lines(sol_tmp / CLASSIFICATION_SOLUTION, "id,label", [f"{n},{test_gid[n]}" for n in order])
        _write_lines(
            sol_tmp / VERIFICATION_SOLUTION,
            "trial,label",
            [f"{line},{y}" for line, y in zip(test_lines, tlabel.tolist(), strict=True)],
        )
        _write_lines(
            sol_tmp / IDENTITY_MAP,
            "path,split,identity",
            [f"{image.path},{_SPLIT_NAMES[image.split]},{image.identity}" for image in images],
        )
    seconds = time.perf_counter() - started
    summary = {
        "identities": n_cls,
        "large_identities": n_large,
        "val_verification_identities": n_vv,
        "test_verification_identities": n_tv,
        "train_images": n_cls * synth.train_images,
        "large_images": n_large * synth.train_images,
        "val_classification_images": n_cls * synth.val_images,
        "test_classification_images": n_test,
        "val_verification_images": n_vv * m,
        "test_verification_images": n_tv * m,
        "val_trials": len(val_lines),
        "test_trials": len(test_lines),
        "images": len(images),
    }
    log.info("rendered %d images in %.1f s (%.0f images/s)", len(images), seconds, len(images) / max(seconds, 1e-9))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Render one competition from the command line (benchmarks, previews)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.sources.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="competition root to write")
    parser.add_argument("--solution", type=Path, required=True, help="folder for the hidden answers (outside --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    overrides = {
        "identities": int,
        "large_identities": int,
        "train_images": int,
        "val_verification_identities": int,
        "test_verification_identities": int,
        "verification_images": int,
        "val_trials": int,
        "test_trials": int,
        "render_size": int,
        "difficulty": float,
        "jpeg_quality": int,
    }
    for name, kind in overrides.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f"synthetic.{name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    update = {name: getattr(args, name) for name in overrides if getattr(args, name) is not None}
    synth = SyntheticParams.model_validate({**SyntheticParams().model_dump(), **update})
    summary = render_competition(args.out, args.solution, synth, LayoutParams(), args.seed, args.workers)
    for key, value in summary.items():
        print(f"{key:32s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
