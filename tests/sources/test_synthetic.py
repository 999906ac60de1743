"""The synthetic source renders a complete, self-consistent competition in the HW2P2 layout, deterministically."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.params import LayoutParams, SyntheticParams
from pipeline.sources.synthetic import (
    CLASSIFICATION_SOLUTION,
    IDENTITY_MAP,
    VERIFICATION_SOLUTION,
    _pair_from_index,
    render_competition,
    sample_trials,
)

LAYOUT = LayoutParams()
TINY = SyntheticParams(
    identities=12,
    large_identities=3,
    train_images=4,
    val_images=2,
    test_images=2,
    val_verification_identities=6,
    test_verification_identities=5,
    verification_images=4,
    val_trials=40,
    test_trials=30,
)


def _render(base: Path, synth: SyntheticParams = TINY, seed: int = 3, workers: int = 1) -> tuple[Path, Path, dict]:
    root, solution = base / "raw", base / "solution"
    summary = render_competition(root, solution, synth, LAYOUT, seed, workers=workers)
    return root, solution, summary


@pytest.fixture(scope="module")
def comp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return _render(tmp_path_factory.mktemp("synthetic"))


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text, path
    return text.splitlines()


def _csv(path: Path) -> list[dict[str, str]]:
    _lines(path)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _identity_of(solution: Path) -> dict[str, str]:
    return {row["path"]: row["identity"] for row in _csv(solution / IDENTITY_MAP)}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_has_every_folder_and_count(comp: tuple[Path, Path, dict]) -> None:
    root, solution, summary = comp
    medium = root / LAYOUT.train_dir / "medium"
    assert sorted(p.name for p in medium.iterdir()) == sorted(str(i) for i in range(12))
    assert all(len(list((medium / str(i)).glob("*.jpg"))) == 4 for i in range(12))
    assert {p.name for p in (medium / "3").iterdir()} == {f"0003_{k:02d}.jpg" for k in range(4)}
    large = root / LAYOUT.train_dir / "large"
    assert sorted(p.name for p in large.iterdir()) == ["12", "13", "14"]
    val = root / LAYOUT.val_classification_dir
    assert sorted(p.name for p in val.iterdir()) == sorted(str(i) for i in range(12))
    assert all(len(list((val / str(i)).glob("*.jpg"))) == 2 for i in range(12))
    assert sorted(p.name for p in (root / LAYOUT.test_classification_dir).iterdir()) == sorted(
        f"{n}.jpg" for n in range(24)
    )
    assert len(list((root / LAYOUT.val_verification_dir).glob("*.jpg"))) == 6 * 4
    assert len(list((root / LAYOUT.test_verification_dir).glob("*.jpg"))) == 5 * 4
    assert summary["images"] == len(list(root.rglob("*.jpg"))) == 12 * 4 + 3 * 4 + 12 * 2 + 24 + 24 + 20
    assert summary["val_trials"] == 40 and summary["test_trials"] == 30
    assert not (root / CLASSIFICATION_SOLUTION).exists() and not list(root.rglob("*.csv")), "answers leak into root"


def test_large_folder_exists_without_large_identities(tmp_path: Path) -> None:
    root, _, _ = _render(tmp_path, TINY.model_copy(update={"large_identities": 0}))
    assert (root / LAYOUT.train_dir / "large").is_dir()
    assert not list((root / LAYOUT.train_dir / "large").iterdir())


def test_order_file_lists_exactly_the_test_images_shuffled(comp: tuple[Path, Path, dict]) -> None:
    root, _, _ = comp
    order = _lines(root / LAYOUT.test_order)
    assert sorted(order) == sorted(p.name for p in (root / LAYOUT.test_classification_dir).iterdir())
    assert len(set(order)) == len(order)
    assert order != sorted(order, key=lambda name: int(name.split(".")[0])) and order != sorted(order)


def test_verification_names_are_unique_and_say_nothing(comp: tuple[Path, Path, dict]) -> None:
    root, _, _ = comp
    val = [p.name for p in (root / LAYOUT.val_verification_dir).iterdir()]
    test = [p.name for p in (root / LAYOUT.test_verification_dir).iterdir()]
    assert all(len(n) == len("123456.jpg") and n[:6].isdigit() for n in val + test)
    assert len(set(val + test)) == len(val) + len(test)


def test_trials_reference_existing_files_balanced_without_duplicates(comp: tuple[Path, Path, dict]) -> None:
    root, solution, _ = comp
    identity = _identity_of(solution)
    for trials, folder, labelled in (
        (LAYOUT.val_trials, LAYOUT.val_verification_dir, True),
        (LAYOUT.test_trials, LAYOUT.test_verification_dir, False),
    ):
        lines = _lines(root / trials)
        fields = [line.split(" ") for line in lines]
        assert all(len(f) == (3 if labelled else 2) for f in fields), trials
        existing = {p.name for p in (root / folder).iterdir()}
        assert all(f[0] in existing and f[1] in existing and f[0] != f[1] for f in fields)
        assert len({frozenset(f[:2]) for f in fields}) == len(fields), f"duplicate pair in {trials}"
        if labelled:
            assert {f[2] for f in fields} == {"0", "1"}
            assert sum(f[2] == "1" for f in fields) == len(fields) // 2
            for a, b, label in fields:
                same = identity[f"{folder}/{a}"] == identity[f"{folder}/{b}"]
                assert label == str(int(same))


def test_solutions_align_row_for_row(comp: tuple[Path, Path, dict]) -> None:
    root, solution, _ = comp
    identity = _identity_of(solution)
    order = _lines(root / LAYOUT.test_order)
    rows = _csv(solution / CLASSIFICATION_SOLUTION)
    assert _lines(solution / CLASSIFICATION_SOLUTION)[0] == "id,label"
    assert [r["id"] for r in rows] == [name.removesuffix(".jpg") for name in order]
    assert all(r["label"] == identity[f"{LAYOUT.test_classification_dir}/{r['id']}.jpg"] for r in rows)
    assert Counter(r["label"] for r in rows) == {str(i): 2 for i in range(12)}

    trials = _lines(root / LAYOUT.test_trials)
    rows = _csv(solution / VERIFICATION_SOLUTION)
    assert _lines(solution / VERIFICATION_SOLUTION)[0] == "trial,label"
    assert [r["trial"] for r in rows] == trials
    folder = LAYOUT.test_verification_dir
    for r in rows:
        a, b = r["trial"].split(" ")
        assert r["label"] == str(int(identity[f"{folder}/{a}"] == identity[f"{folder}/{b}"]))
    assert sum(r["label"] == "1" for r in rows) == 15


def test_identity_groups_are_disjoint(comp: tuple[Path, Path, dict]) -> None:
    root, solution, _ = comp
    groups: dict[str, set[str]] = {}
    for row in _csv(solution / IDENTITY_MAP):
        groups.setdefault(row["split"], set()).add(row["identity"])
        assert (root / row["path"]).is_file()
    medium = {str(i) for i in range(12)}
    assert groups["train"] == groups["val"] == groups["test"] == medium
    others = [groups["large"], groups["val_verification"], groups["test_verification"]]
    assert [len(g) for g in others] == [3, 6, 5]
    for i, g in enumerate(others):
        assert not g & medium
        assert all(not g & h for h in others[i + 1 :])
    assert len(_csv(solution / IDENTITY_MAP)) == len(list(root.rglob("*.jpg")))


def test_images_are_colour_jpegs_of_the_right_size(comp: tuple[Path, Path, dict]) -> None:
    root, _, _ = comp
    paths = sorted(root.rglob("*.jpg"))
    colourful = 0
    for path in paths:
        data = path.read_bytes()
        assert data[:3] == b"\xff\xd8\xff", path
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32, 3), path
        colourful += int(np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).mean() > 2)
    assert colourful == len(paths)


def test_other_image_size(tmp_path: Path) -> None:
    synth = TINY.model_copy(update={"identities": 2, "large_identities": 0, "render_size": 64})
    root, _, _ = _render(tmp_path, synth)
    img = cv2.imread(str(next((root / LAYOUT.val_verification_dir).iterdir())), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 64, 3)


def test_same_seed_same_bytes_whatever_the_workers(comp: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, solution, _ = comp
    root2, solution2, _ = _render(tmp_path, workers=2)
    assert _tree_bytes(root2) == _tree_bytes(root)
    assert _tree_bytes(solution2) == _tree_bytes(solution)


def test_different_seed_different_competition(comp: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, _, _ = comp
    root2, _, _ = _render(tmp_path, seed=4)
    a, b = _tree_bytes(root), _tree_bytes(root2)
    shared = [k for k in a if k in b and k.endswith(".jpg")]
    assert shared and all(a[k] != b[k] for k in shared)
    assert a[LAYOUT.test_order] != b[LAYOUT.test_order]


def test_rerender_replaces_the_folders_whole(tmp_path: Path) -> None:
    root, solution, _ = _render(tmp_path)
    (root / "stale.txt").write_text("x\n")
    (solution / "stale.csv").write_text("x\n")
    _render(tmp_path)
    assert not (root / "stale.txt").exists() and not (solution / "stale.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_refuses_bad_setups_before_touching_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        render_competition(tmp_path / "raw", tmp_path / "raw" / "solution", TINY, LAYOUT, 0)
    too_many = TINY.model_copy(update={"val_trials": 1000})
    with pytest.raises(ValueError, match="val_trials"):
        render_competition(tmp_path / "raw", tmp_path / "solution", too_many, LAYOUT, 0)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_pair_index_decoding_matches_triu(n: int) -> None:
    i, j = _pair_from_index(np.arange(n * (n - 1) // 2), n)
    ti, tj = np.triu_indices(n, 1)
    assert np.array_equal(i, ti) and np.array_equal(j, tj)


def test_sample_trials_at_scale() -> None:
    identities, m, n = 2300, 16, 200_001
    a, b, label = sample_trials(np.random.default_rng(0), identities, m, n)
    assert len(a) == len(b) == len(label) == n
    assert label.sum() == n // 2
    assert np.array_equal(a // m == b // m, label == 1)
    assert not np.any(a == b) and a.max() < identities * m and b.max() < identities * m
    key = np.minimum(a, b) * identities * m + np.maximum(a, b)
    assert len(np.unique(key)) == n
    assert 0.4 < np.mean(a < b) < 0.6, "pair order must be random"
    assert 0.4 < label[: n // 10].mean() < 0.6, "trials must be shuffled"


def test_sample_trials_uses_every_same_pair_when_asked() -> None:
    a, b, label = sample_trials(np.random.default_rng(1), 3, 4, 36)  # 3 x C(4,2) = 18 same-identity pairs
    same = {frozenset(p) for p in zip(a[label == 1].tolist(), b[label == 1].tolist(), strict=True)}
    assert len(same) == 18
    with pytest.raises(ValueError, match="same-identity"):
        sample_trials(np.random.default_rng(1), 3, 4, 38)


def test_raw_pixels_are_a_weak_baseline(tmp_path: Path) -> None:
    """Mean-centred pixel cosine must beat chance but stay far from solving verification (default difficulty)."""
    synth = TINY.model_copy(
        update={"identities": 2, "large_identities": 0, "val_verification_identities": 40, "verification_images": 6}
    )
    synth = synth.model_copy(update={"val_trials": 1200})
    root, _, _ = _render(tmp_path, synth, seed=0)
    folder = root / LAYOUT.val_verification_dir
    fields = [line.split() for line in _lines(root / LAYOUT.val_trials)]
    cache: dict[str, np.ndarray] = {}

    def vec(name: str) -> np.ndarray:
        if name not in cache:
            v = cv2.imread(str(folder / name)).astype(np.float64).ravel()
            v -= v.mean()
            cache[name] = v / np.linalg.norm(v)
        return cache[name]

    scores = [float(vec(a) @ vec(b)) for a, b, _ in fields]
    auc = roc_auc_score([int(f[2]) for f in fields], scores)
    assert 0.55 < auc < 0.85, auc


def test_command_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pipeline.sources.synthetic", "--out", str(tmp_path / "raw")]
    cmd += ["--solution", str(tmp_path / "sol"), "--seed", "5", "--workers", "1", "--identities", "3"]
    cmd += ["--large-identities", "1", "--train-images", "2", "--val-trials", "20", "--test-trials", "20"]
    cmd += ["--verification-images", "3", "--val-verification-identities", "4", "--test-verification-identities", "4"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "raw" / LAYOUT.train_dir / "medium").iterdir())) == 3
    assert len(_lines(tmp_path / "raw" / LAYOUT.val_trials)) == 20
    assert (tmp_path / "sol" / CLASSIFICATION_SOLUTION).is_file()
