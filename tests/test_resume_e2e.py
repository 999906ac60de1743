"""SIGKILL in the middle of training, then `dvc repro` again: it resumes from the last checkpoint and ends with
byte-identical submissions to a run that was never interrupted (CPU, fixed seed). Also shows determinism: the two
runs are separate processes in separate folders."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_PARAMS, git_env, make_project, merge, run

pytestmark = pytest.mark.slow

PARAMS = merge(TINY_PARAMS, {"train": {"epochs": 4}, "finetune": {"epochs": 3}, "folds": {"train": [0]}})
OUTPUTS = ("submissions/classification.csv", "submissions/verification.csv", "metrics/ensemble.json")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("reference") / "project", PARAMS)
    run(["dvc", "repro"], project)
    return project


@pytest.mark.parametrize("phase_checkpoint", ["models/fold0/checkpoint.pt", "models/fold0/finetune/checkpoint.pt"])
def test_killed_training_resumes_to_the_same_result(tmp_path: Path, reference: Path, phase_checkpoint: str):
    """Killed in phase 1 (classification) or in phase 2 (the triplet fine-tune)."""
    project = make_project(tmp_path / "killed", PARAMS)
    checkpoint = project / phase_checkpoint
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project,
        env=git_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "training never wrote its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: dvc and the training process, mid-epoch 2
    proc.wait()
    assert not (project / "models/fold0/model.pt").exists(), "the kill came too late to interrupt training"
    assert not list(project.glob("models/fold0/**/checkpoint.pt.*")), "a half-written checkpoint was left behind"

    out = run(["dvc", "repro"], project)
    assert f"resuming from {phase_checkpoint} after epoch" in out.stderr + out.stdout
    for rel in OUTPUTS:
        assert (project / rel).read_bytes() == (reference / rel).read_bytes(), rel
