"""`data.source: imagefolder`: turn any `<identity>/<image>` folder (LFW, CASIA, VGGFace2 crops, ORL's PGMs, your
own photos) into a competition in the HW2P2 layout, with hidden answers for local scoring.

Splits are deterministic (``imagefolder.seed``): a fraction of the identities is used for classification (each
one's images split into train / validation / test), the others are split into validation and test verification
identities, disjoint from each other and from classification. Trials are balanced: every same-identity pair up to
a cap per identity, and as many different-identity pairs.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline import images
from pipeline.io import atomic_dir, check_free_space
from pipeline.params import ImagefolderParams, LayoutParams

log = logging.getLogger(__name__)


def scan_identities(src: Path) -> dict[str, list[Path]]:
    """Image files per identity folder (sorted); identities with fewer than 2 images are dropped."""
    if not src.is_dir():
        raise FileNotFoundError(f"data.path {src}: not a folder of <identity>/<image> folders")
    found = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [folder / n for n in images.list_images(folder)]
        if len(files) >= 2:
            found[folder.name] = files
    if len(found) < 4:
        raise ValueError(f"data.path {src}: {len(found)} identity folders with 2+ images; need at least 4")
    return found


def split_identities(names: list[str], p: ImagefolderParams) -> tuple[list[str], list[str], list[str]]:
    """(classification, validation-verification, test-verification) identities, disjoint, by seed."""
    order = np.random.default_rng(p.seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    n_cls = max(1, int(round(len(names) * p.classification_fraction)))
    n_cls = min(n_cls, len(names) - 2)
    rest = shuffled[n_cls:]
    half = len(rest) // 2
    return sorted(shuffled[:n_cls]), sorted(rest[:half]), sorted(rest[half:])


def balanced_trials(groups: list[list[str]], cap: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """Same-identity pairs (all, or `cap` random ones per identity) plus as many different-identity pairs."""
    same = []
    for files in groups:
        pairs = list(itertools.combinations(files, 2))
        if len(pairs) > cap:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), cap, replace=False))]
        same += pairs
    owner = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    flat = [f for g in groups for f in g]
    seen: set[tuple[str, str]] = set()
    different = []
    budget = len(same) * 50  # rejection sampling always finishes: there are far more different pairs than same
    while len(different) < len(same) and budget:
        budget -= 1
        a, b = rng.integers(len(flat), size=2)
        if owner[a] == owner[b] or (flat[a], flat[b]) in seen or (flat[b], flat[a]) in seen:
            continue
        seen.add((flat[a], flat[b]))
        different.append((flat[a], flat[b]))
    trials = [(a, b, 1) for a, b in same] + [(a, b, 0) for a, b in different]
    return [trials[i] for i in rng.permutation(len(trials))]


def build_competition(src: Path, out: Path, solution: Path, p: ImagefolderParams, layout: LayoutParams) -> dict:
    """Write the HW2P2 layout into `out` and the hidden answers into `solution` (both atomically)."""
    src = Path(src).expanduser()
    found = scan_identities(src)
    cls_ids, val_ids, test_ids = split_identities(list(found), p)
    rng = np.random.default_rng([p.seed, 1])
    jobs: list[tuple[Path, str]] = []  # (source file, destination relative to out)
    test_rows, dropped = [], []
    for identity in cls_ids:
        files = [found[identity][i] for i in rng.permutation(len(found[identity]))]
        n_val, n_test = p.val_images, p.test_images
        if len(files) < n_val + n_test + 1:
            dropped.append(identity)
            continue
        for f in files[:n_val]:
            jobs.append((f, f"{layout.val_classification_dir}/{identity}/{f.stem}.jpg"))
        for f in files[n_val : n_val + n_test]:
            test_rows.append((f, identity))
        for f in files[n_val + n_test :]:
            jobs.append((f, f"{layout.train_dir}/medium/{identity}/{f.stem}.jpg"))
    if dropped:
        log.warning("%d classification identities have too few images for val+test+train: left out", len(dropped))
    test_order = rng.permutation(len(test_rows))
    solution_cls = []
    for n, i in enumerate(test_order):
        f, identity = test_rows[i]
        jobs.append((f, f"{layout.test_classification_dir}/{n}.jpg"))
        solution_cls.append((str(n), identity))
    order_lines = [f"{n}.jpg" for n in rng.permutation(len(test_rows))]
    position = {line: i for i, line in enumerate(order_lines)}
    solution_cls.sort(key=lambda row: position[f"{row[0]}.jpg"])

    trial_files = {}
    for split, ids, folder in (
        ("val", val_ids, layout.val_verification_dir),
        ("test", test_ids, layout.test_verification_dir),
    ):
        files = [f for identity in ids for f in found[identity]]
        names = [f"{k:06d}.jpg" for k in rng.permutation(len(files))]  # anonymous: names reveal nothing
        name_of = dict(zip(files, names, strict=True))
        for f in files:
            jobs.append((f, f"{folder}/{name_of[f]}"))
        groups = [[name_of[f] for f in found[identity]] for identity in ids]
        trial_files[split] = balanced_trials(groups, p.max_same_pairs, rng)

    def convert(job: tuple[Path, str]) -> tuple[str, str] | None:
        src_file, rel = job
        try:
            img = images.read_image(src_file)
        except (images.BadImage, OSError) as err:
            return str(src_file), str(err)
        if p.crop_size:
            img = images.fit(img, p.crop_size, p.center_crop)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        (tmp / rel).write_bytes(buf.tobytes())
        return None

    side = p.crop_size or 256  # 0 keeps the source size: estimate generously
    check_free_space(out, len(jobs) * (4096 + side * side * 3 // 2), "the imagefolder competition")
    with atomic_dir(solution) as sol_tmp, atomic_dir(out) as tmp:
        for rel in {str(Path(r).parent) for _, r in jobs} | {layout.test_classification_dir}:
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        bad = [b for b in images.parallel_map(convert, jobs, desc="building competition") if b]
        if bad:
            listing = "\n".join(f"  {path}: {err}" for path, err in bad)
            raise ValueError(f"{len(bad)} unreadable images under {src}:\n{listing}")
        (tmp / layout.test_order).write_text("".join(f"{n}\n" for n in order_lines), encoding="utf-8")
        (tmp / layout.val_trials).write_text("".join(f"{a} {b} {y}\n" for a, b, y in trial_files["val"]))
        (tmp / layout.test_trials).write_text("".join(f"{a} {b}\n" for a, b, _ in trial_files["test"]))
        pd.DataFrame(solution_cls, columns=["id", "label"]).to_csv(sol_tmp / "classification_solution.csv", index=False)
        pd.DataFrame([(f"{a} {b}", y) for a, b, y in trial_files["test"]], columns=["trial", "label"]).to_csv(
            sol_tmp / "verification_solution.csv", index=False
        )
    summary = {
        "classification_identities": len(cls_ids) - len(dropped),
        "val_verification_identities": len(val_ids),
        "test_verification_identities": len(test_ids),
        "images": len(jobs),
        "val_trials": len(trial_files["val"]),
        "test_trials": len(trial_files["test"]),
    }
    log.info("imagefolder %s -> %s: %s", src, out, summary)
    return summary
