"""Shared fixtures: a throwaway copy of the project with tiny params, and the real face data when present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.stages.common import TRACE_ENV

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent

# Small enough for a full `dvc repro` in about a minute on 2 CPU cores, and long enough to learn: 8 epochs of 6
# steps. Measured over seeds 0-3 (python /tmp/tiny_try.py-style runs of these params): ensemble validation AUC
# 0.832-0.854 against the raw-pixel baseline's 0.645-0.722 (margin 0.117-0.189), accuracy 0.479-0.542 over 24
# identities. 240 validation trials over 16 identities keep the AUC's spread small enough to test.
TINY_PARAMS = {
    "synthetic": {
        "identities": 24,
        "large_identities": 2,
        "train_images": 8,
        "val_images": 2,
        "test_images": 2,
        "val_verification_identities": 16,
        "test_verification_identities": 8,
        "verification_images": 6,
        "val_trials": 240,
        "test_trials": 60,
    },
    "train": {"epochs": 8, "batch_size": 32, "num_workers": 0},
    "finetune": {"epochs": 1},
    "embed": {"batch_size": 128},
    "augment": {"preview_images": 4},
    "source": {"identities": 0},  # tests/test_source_model.py runs the source stage under dvc repro
    "folds": {"train": [0, 1]},  # two fold models, so that the ensemble has something to combine
}


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone (plus local edits) would hold."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project into `dest` as its own git repository, with params.yaml updated by `params`."""
    for rel in project_files():
        if rel.startswith(("data/", "models/", "embeddings/", "dvclive/", "metrics/", "plots/")) or rel == "dvc.lock":
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    if params:
        current = yaml.safe_load((dest / "params.yaml").read_text())
        (dest / "params.yaml").write_text(yaml.safe_dump(merge(current, params), sort_keys=False))
    env = git_env()
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "test copy"], cwd=dest, check=True, env=env)
    return dest


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a real command in the project copy with the venv first on PATH (and `env` added); output is kept for
    assertions."""
    proc = subprocess.run(
        cmd, cwd=cwd, env={**git_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


# Test files that read the one reproduced project of `tiny_repro` (a session fixture: one `dvc repro` per worker).
SHARE_TINY_REPRO = {"tests/test_e2e.py", "tests/test_plots_page.py"}


def _scope(nodeid: str) -> str:
    """The unit of work a test belongs to under xdist: its file, or "tiny_repro" for the files sharing that project."""
    file = nodeid.split("::")[0]
    return "tiny_repro" if file in SHARE_TINY_REPRO else file


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Units holding a slow test first, each unit's tests in their own order: under xdist the units are handed out
    in this order, so the minute-long end-to-end files start early while the other worker works through the quick
    ones, instead of one of them running alone at the end (xdist's own order puts the units with most tests first,
    which is where the parametrised unit tests are)."""
    slow = {_scope(item.nodeid) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _scope(item.nodeid) not in slow)  # stable: the order inside a unit is kept


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under pytest-xdist (`make test` runs `-n 2`): each test file on one worker, in collection order
    (`pytest_collection_modifyitems`), so module fixtures are built once and the tests that edit a shared project
    run after those that read it; the files of `SHARE_TINY_REPRO` on one worker together. (xdist's `--dist
    loadgroup` marks do not reach pytest 9's test ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection's order of units

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return FileScheduling(config, log)


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A project copy with TINY_PARAMS, not yet run."""
    return make_project(tmp_path / "project", TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with TINY_PARAMS after one full `dvc repro` (shared by the tests that only read it)."""
    project = make_project(tmp_path_factory.mktemp("repro") / "project", TINY_PARAMS)
    run(["dvc", "repro"], project, env={TRACE_ENV: str(project.parent / "params_read")})
    return project


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real face sets live in ../shared/data beside the project")
    return path
