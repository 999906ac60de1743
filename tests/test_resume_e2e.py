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


def kill_after_first_checkpoint(project: Path, checkpoint: Path, log: Path) -> None:
    """`dvc repro`, SIGKILLed with its whole process group (dvc and the training process) as soon as `checkpoint`
    exists: in the epoch after it, before the phase ends."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["dvc", "repro"], cwd=project, env=git_env(), start_new_session=True, stdout=out, stderr=out
        )
        deadline = time.monotonic() + 600
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), f"training never wrote {checkpoint}:\n{log.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (project / "models/fold0/model.pt").exists(), "the kill came too late to interrupt training"
    assert not list(project.glob("models/fold0/**/checkpoint.pt.*")), "a half-written checkpoint was left behind"


def test_killed_in_each_phase_resumes_to_the_same_result(tmp_path: Path):
    """Killed in phase 1 (classification), then again in phase 2 (the triplet fine-tune) of the resumed run; the
    last `dvc repro` finishes. A run of the same params never interrupted, in another folder, is the reference."""
    reference = make_project(tmp_path / "reference" / "project", PARAMS)
    run(["dvc", "repro"], reference)

    project = make_project(tmp_path / "killed" / "project", PARAMS)
    phase1, phase2 = project / "models/fold0/checkpoint.pt", project / "models/fold0/finetune/checkpoint.pt"
    kill_after_first_checkpoint(project, phase1, tmp_path / "first.log")
    kill_after_first_checkpoint(project, phase2, tmp_path / "second.log")
    assert "resuming from models/fold0/checkpoint.pt after epoch" in (tmp_path / "second.log").read_text()

    out = run(["dvc", "repro"], project)
    assert "resuming from models/fold0/finetune/checkpoint.pt after epoch" in out.stderr + out.stdout
    for rel in OUTPUTS:
        assert (project / rel).read_bytes() == (reference / rel).read_bytes(), rel
