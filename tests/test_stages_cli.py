"""The stage entry points as a user meets them: `--help` at once (nothing heavy loaded before it prints), usage lines
that name `python -m pipeline.stages.<name>`, a clear message under an interpreter without the project's packages,
and one line, exit status 130, for an interrupt."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.stages.common import INTERRUPTED, interrupted_line, stage
from tests.import_graph import ROOT

STAGES = sorted(
    {
        body.get("do", body)["cmd"].split()[2].rsplit(".", 1)[1]  # "python -m pipeline.stages.<name> ..."
        for body in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    }
)
# What makes `--help` slow (torch alone takes seconds to load, more on a cold disk): none may load before it prints.
HEAVY = ("torch", "timm", "albumentations", "dvclive", "sklearn", "cv2", "pandas", "numpy", "matplotlib")

# Runs the stage module as `python -m` does (as __main__), then reports what it loaded: a check of the import
# placement, which no machine load can make flaky the way a wall-clock limit could.
HELP_PROBE = """
import json, runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
    status = None
except SystemExit as exit:
    status = exit.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("PROBE " + json.dumps({{"status": status, "heavy": heavy}}))
"""


def test_every_stage_is_listed():
    assert STAGES == [
        "analyse",
        "augment",
        "decode",
        "download",
        "embed",
        "ensemble",
        "folds",
        "index",
        "source",
        "train",
    ]


@pytest.mark.parametrize("name", STAGES)
def test_help_loads_nothing_heavy_and_names_the_command(name):
    module = f"pipeline.stages.{name}"
    code = HELP_PROBE.format(module=module, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_text, _, probe = proc.stdout.rpartition("PROBE ")
    result = json.loads(probe)
    assert result["status"] == 0, proc.stdout + proc.stderr
    assert result["heavy"] == [], f"{module} loads {result['heavy']} before its --help prints"
    assert help_text.startswith(f"usage: python -m {module} [-h] [--params PARAMS]"), help_text


def test_help_as_the_user_types_it():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m pipeline.stages.train "), proc.stdout
    assert "--fold" in proc.stdout and proc.stderr == ""


def bare_interpreters() -> list:
    """Interpreters without the project's packages: this venv's Python without site-packages (always), and the
    system Python where it exists and lacks them."""
    found = [pytest.param([sys.executable, "-S"], id="python-S")]
    system = Path("/usr/bin/python3")
    if system.exists():
        probe = subprocess.run([str(system), "-c", "import albumentations"], capture_output=True)
        marks = [] if probe.returncode else [pytest.mark.skip(reason=f"{system} has albumentations")]
        found.append(pytest.param([str(system)], id="system-python", marks=marks))
    return found


@pytest.mark.parametrize("interpreter", bare_interpreters())
def test_a_python_without_the_packages_says_what_to_do(interpreter):
    proc = subprocess.run(
        [*interpreter, "-m", "pipeline.stages.index", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    message = proc.stderr
    assert "lacks" in message and "albumentations" in message and "torch" in message, message
    executable = subprocess.run(
        [*interpreter, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True
    ).stdout.strip()
    assert executable in message, message
    assert "source .venv/bin/activate" in message and "make repro" in message, message


def test_the_project_python_passes_the_check():
    from pipeline.stages import missing_packages

    assert missing_packages() == []


def test_an_interrupt_is_one_line_and_status_130(caplog: pytest.LogCaptureFixture):
    @stage
    def main(argv: list[str] | None = None) -> None:
        raise KeyboardInterrupt

    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert main([]) == INTERRUPTED == 130
    assert [r.getMessage() for r in caplog.records] == [interrupted_line(__name__)]
    assert "half-written" in caplog.records[0].getMessage() and "again" in caplog.records[0].getMessage()


def test_a_training_interrupt_keeps_its_own_line(caplog: pytest.LogCaptureFixture):
    class TrainingInterrupted(KeyboardInterrupt):  # pipeline.engine's, without loading torch here
        pass

    @stage
    def main(argv: list[str] | None = None) -> None:
        raise TrainingInterrupted("interrupted in epoch 3/27: models/fold0/checkpoint.pt holds the 2 finished epochs")

    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert main([]) == 130
    assert [r.getMessage() for r in caplog.records] == [
        "interrupted in epoch 3/27: models/fold0/checkpoint.pt holds the 2 finished epochs"
    ]


# Loads the params as a stage that builds no model does, then reports whether torch came with them.
PARAMS_PROBE = """
import json, sys
from pipeline.params import load_params
load_params({path!r}, check_model={check!r})
print(json.dumps([m for m in ("torch", "timm") if m in sys.modules]))
"""


@pytest.mark.parametrize(("check", "loaded"), [(False, []), (True, ["torch", "timm"])])
def test_only_the_model_name_check_loads_torch(check, loaded):
    """The stages that build no model skip looking `model.name` up in timm (seconds of imports each)."""
    code = PARAMS_PROBE.format(path=str(ROOT / "params.yaml"), check=check)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == loaded


def test_the_source_stage_switched_off_loads_no_torch(tmp_path: Path):
    """Switched off (`source.identities: 0`, recipes/scratch.yaml) the stage still runs in every `dvc repro`: it
    writes its note without torch."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["source"]["identities"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    probe = (
        "import json, sys, runpy\n"
        f"sys.argv = ['pipeline.stages.source', '--out', {str(tmp_path / 'source')!r}, "
        f"'--params', {str(tmp_path / 'params.yaml')!r}]\n"
        "try:\n    runpy.run_module('pipeline.stages.source', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "print('PROBE ' + json.dumps([m for m in ('torch', 'timm') if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.rpartition("PROBE ")[2]) == []
    assert json.loads((tmp_path / "source" / "source.json").read_text())["identities"] == 0
