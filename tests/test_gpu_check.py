"""`python -m pipeline.gpu_check`: CUDA asked for and absent fails loudly at once; on a CPU the same flow runs at a
tiny size (process group, every training setting but torch.compile, embedding, the bench's rows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import gpu_check
from pipeline.bench.dataset import FULL
from tests.conftest import ROOT


def _gpu_check(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.gpu_check", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cuda_asked_for_and_absent_fails_loudly_before_any_work(tmp_path: Path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this shows the absent case on a CUDA machine too.
    done = _gpu_check("--cache", str(tmp_path / "cache"), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert done.returncode == 1
    assert "CUDA was asked for but torch.cuda.is_available() is False: torch " in done.stderr
    assert "--device cpu" in done.stderr  # says what to do
    assert not (tmp_path / "cache").exists()  # nothing rendered or trained first


def test_the_settings_cover_the_issues_list():
    names = [v.name for v in gpu_check.CUDA_VARIANTS]
    assert {v.amp_dtype for v in gpu_check.CUDA_VARIANTS} == {"float16", "bfloat16"}
    assert {v.channels_last for v in gpu_check.CUDA_VARIANTS} == {True, False}
    assert {v.compile for v in gpu_check.CUDA_VARIANTS} == {True, False}
    assert all(
        "GradScaler" in n for n, v in zip(names, gpu_check.CUDA_VARIANTS, strict=True) if v.amp_dtype == "float16"
    )
    assert not any(v.amp_dtype == "float16" for v in gpu_check.CPU_VARIANTS)  # no fp16 autocast on a CPU


def test_the_set_is_large_enough_for_both_trainings():
    for batch, steps in ((256, 150), (512, 300), (32, 3)):
        scale = gpu_check.set_scale(batch, steps)
        medium = round(FULL["identities"] * scale) * FULL["train_images"]
        everything = medium + round(FULL["large_identities"] * scale) * FULL["train_images"]
        assert medium >= (gpu_check.BENCH_TRAIN_STEPS + 1) * batch and everything >= steps * batch, (batch, steps)
    assert gpu_check.set_scale(4096, 1000) == 1.0


def test_the_recipe_is_applied_and_the_device_is_the_checks():
    params = gpu_check.load_check_params(ROOT / "params.yaml", "competition", "cpu", tiny=True)
    assert params.model.width == 1.0 and params.train.device == "cpu"  # the recipe's cuda, replaced
    assert params.train.batch_size == 32 and params.train.num_workers == 0


def test_unknown_checks_to_skip_are_refused():
    done = _gpu_check("--skip", "trian", timeout=60)
    assert done.returncode == 2 and "unknown check(s) trian" in done.stderr


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_check(tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    done = _gpu_check(
        "--device",
        "cpu",
        "--tiny",
        "--recipe",
        "none",
        "--skip",
        "compile",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    by_bench = {}
    for row in rows:
        by_bench.setdefault(row["bench"], []).append(row)
        assert row["ours"] > 0 and row["met"] is True, row
    assert [r["name"] for r in by_bench["process group"]] == ["1-process gloo: init, all_reduce, destroy"]
    assert [r["name"] for r in by_bench["train stage"]] == [v.name for v in gpu_check.CPU_VARIANTS if not v.compile]
    assert [r["name"] for r in by_bench["embedding"]] == ["infer fp32 (batch 128)", "infer bf16 (batch 128)"]
    assert "[training] train stage end to end (engine.train)" in done.stdout  # the bench's rows ran
    assert "[embedding] infer bf16 autocast" in done.stdout
    assert "gpu-check passed in" in done.stdout
