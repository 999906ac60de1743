"""`python -m pipeline.bench --small` runs end to end as a real process: every row is printed, and the
verification path embeds each unique image exactly once. No timing is asserted: the figures are the bench's
output, not the test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SLOW = pytest.mark.slow  # real bench processes (the --small run is shared): about a minute on 2 idle cores
EXPECTED_ROWS = {"scoring": 5, "loading": 2, "training": 3, "embedding": 3, "indexing": 3}  # on CPU, default params


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "bench.json"
    cmd = [sys.executable, "-m", "pipeline.bench", "--small", "--device", "cpu", "--cache", str(tmp / "cache")]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text()), tmp / "cache"


@SLOW
def test_every_row_is_printed_and_written(small_run):
    stdout, result, _ = small_run
    rows = result["rows"]
    counts = {bench: sum(r["bench"] == bench for r in rows) for bench in EXPECTED_ROWS}
    assert counts == EXPECTED_ROWS
    for row in rows:
        assert f"[{row['bench']}] {row['name']}" in stdout
        assert row["ours"] >= 0
    for key in ("cpu", "cores", "torch", "device"):
        assert key in result["machine"]
    assert "machine:" in stdout and result["machine"]["device"] == "cpu"


@SLOW
def test_verification_embeds_each_unique_image_once(small_run):
    _, result, cache = small_run
    (row,) = [r for r in result["rows"] if r["name"].startswith("embedding forward passes")]
    raw = next(cache.glob("small-*")) / "raw"
    trials = (raw / "test_trials_verification_student.txt").read_text().split()
    unique = len(set(trials))
    assert row["extra"]["unique_images"] == unique
    assert row["extra"]["ours_passes"] == unique
    assert row["extra"]["naive_passes"] == len(trials)  # two images per trial line
    assert row["met"] is True


@SLOW
def test_index_does_not_stat_every_file(small_run):
    _, result, cache = small_run
    (row,) = [r for r in result["rows"] if r["name"].startswith("os.stat calls")]
    assert row["extra"]["files"] > 1000
    assert row["extra"]["stat_calls"] < row["extra"]["files"] / 10


@SLOW
def test_second_run_reuses_the_cached_set(small_run):
    _, _, cache = small_run
    folder = next(cache.glob("small-*"))
    before = (folder / "spec.json").stat().st_mtime_ns
    cmd = [sys.executable, "-m", "pipeline.bench", "--small", "--device", "cpu", "--cache", str(cache)]
    proc = subprocess.run([*cmd, "--only", "indexing"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "using the cached bench set" in proc.stderr
    assert (folder / "spec.json").stat().st_mtime_ns == before
    assert "[indexing]" in proc.stdout and "[scoring]" not in proc.stdout


@SLOW
def test_a_cache_with_older_manifests_is_reindexed_not_rendered(small_run):
    """A set cached before the index stage's manifests changed gets new manifests over the same rendered images."""
    from pipeline.bench.dataset import INDEX_VERSION, SMALL_SCALE, prepare
    from pipeline.trial_files import read_trial_manifest

    _, _, cache = small_run
    folder = next(cache.glob("small-*"))
    spec = json.loads((folder / "spec.json").read_text())
    old = {k: v for k, v in spec.items() if k != "index_version"}  # as written before index versions existed
    (folder / "spec.json").write_text(json.dumps(old))
    (folder / "index" / "test_trials.txt").unlink()
    image = next((folder / "raw" / "test_verification").iterdir())
    rendered = image.stat().st_mtime_ns
    decoded = (folder / "decoded" / "train.npy").stat().st_mtime_ns
    data = prepare(cache, SMALL_SCALE, spec["data"]["image_size"], seed=spec["seed"])
    assert data.folder == folder
    assert len(read_trial_manifest(data.index, "test_trials")) == spec["synthetic"]["test_trials"]
    assert json.loads((folder / "spec.json").read_text())["index_version"] == INDEX_VERSION
    assert image.stat().st_mtime_ns == rendered  # not rendered again
    assert (folder / "decoded" / "train.npy").stat().st_mtime_ns == decoded  # same image list: not decoded again


def test_unknown_benchmark_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench", "--only", "scoring,lodaing"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "lodaing" in proc.stderr


def test_scaled_specs_keep_trial_files_feasible():
    from pipeline.bench.dataset import FULL, synthetic_spec

    full = synthetic_spec(1.0, 32)
    assert (full.identities + full.large_identities) * full.train_images == 378_400
    assert (full.val_trials, full.test_trials) == (FULL["val_trials"], FULL["test_trials"])
    for scale in (0.001, 0.01, 0.05, 0.3):
        s = synthetic_spec(scale, 32)
        m = s.verification_images
        for ids, n in ((s.val_verification_identities, s.val_trials), (s.test_verification_identities, s.test_trials)):
            assert n // 2 <= ids * m * (m - 1) // 2
            assert n - n // 2 <= ids * (ids - 1) // 2 * m * m
    with pytest.raises(ValueError, match="scale"):
        synthetic_spec(0.0, 32)
