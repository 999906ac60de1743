"""Ctrl-C: a stage ends with one line saying what was kept and how to go on, exit status 130, and no traceback (from
the stage or from its DataLoader workers, which get the SIGINT too)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.engine import TrainingInterrupted, interrupted_message
from tests.conftest import TINY_PARAMS, git_env, make_project, merge, run

CKPT = Path("models/fold0/checkpoint.pt")


def fake_run(epochs: int, ckpt: Path = CKPT) -> SimpleNamespace:
    return SimpleNamespace(budget=SimpleNamespace(epochs=epochs), ckpt_path=ckpt)


def test_the_message_names_the_checkpoint_and_how_to_resume():
    assert interrupted_message(fake_run(27), epoch=2, kept=2) == (
        "interrupted in epoch 3/27: models/fold0/checkpoint.pt holds the 2 finished epochs; "
        "run dvc repro (or make repro) again to resume from it"
    )
    assert "holds the 1 finished epoch;" in interrupted_message(fake_run(27), epoch=1, kept=1)
    phase2 = interrupted_message(fake_run(3, Path("models/fold0/finetune/checkpoint.pt")), 1, 1, prefix="finetune")
    assert phase2.startswith("interrupted in finetune epoch 2/3: models/fold0/finetune/checkpoint.pt holds")


def test_before_the_first_checkpoint_it_says_the_phase_starts_over():
    line = interrupted_message(fake_run(27), epoch=0, kept=0)
    assert line.startswith("interrupted in epoch 1/27, before its first checkpoint")
    assert "start this phase over" in line and "resume from it" not in line


def test_training_interrupted_is_a_keyboard_interrupt():
    assert issubclass(TrainingInterrupted, KeyboardInterrupt)  # so the stage wrapper and Python treat it as one


def stage_commands(project: Path) -> dict[str, list[str]]:
    """Each stage's command from dvc.yaml (fold 0 for the foreach stages)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {name: shlex.split(body.get("do", body)["cmd"].replace("${item}", "0")) for name, body in stages.items()}


def default_sigint() -> None:
    """Ctrl-C's default in the child: a shell without job control starts background jobs (a CI step run with `&`)
    with SIGINT ignored, and an ignored SIGINT is inherited, so Python would never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_in_training_names_the_checkpoint_and_resumes(tmp_path: Path):
    """SIGINT to the process group (as a terminal's Ctrl-C: the stage and its DataLoader workers) after the first
    checkpoint; then the same command resumes from it, as the line says."""
    params = merge(TINY_PARAMS, {"train": {"num_workers": 2}, "finetune": {"epochs": 0}, "folds": {"train": [0]}})
    project = make_project(tmp_path / "project", params)
    commands = stage_commands(project)
    for name in ("download", "index", "decode", "folds", "augment"):
        run(commands[name], project)

    log = tmp_path / "train.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            commands["train"],
            cwd=project,
            env=git_env(),
            start_new_session=True,
            stdout=stderr,
            stderr=stderr,
            preexec_fn=default_sigint,
        )
        deadline = time.monotonic() + 600
        while not (project / CKPT).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (project / CKPT).exists(), "training never wrote its first checkpoint:\n" + log.read_text()[-4000:]
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=120)
    out = log.read_text()
    assert status == 130, out[-4000:]
    assert "Traceback" not in out, out[-6000:]
    assert not (project / "models/fold0/model.pt").exists(), "the interrupt came too late to stop training"
    assert not list(project.glob("models/fold0/.tmp-*")), "a half-written checkpoint was left behind"
    last = [line for line in out.splitlines() if line.strip()][-1]
    assert "interrupted in epoch" in last and "models/fold0/checkpoint.pt holds the" in last, last
    assert "resume" in last, last

    again = run(commands["train"], project)
    assert "resuming from models/fold0/checkpoint.pt after epoch" in again.stderr
    assert (project / "models/fold0/model.pt").exists()
