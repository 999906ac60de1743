"""The working copy a scale run works in: a git clone of the project, its params set for the run.

The run never touches the project's own outputs (data/, models/, metrics/, ...): it clones the project's last commit
into another folder and runs there. A folder made by an earlier scale run is reused, so an interrupted run goes on
where it stopped (`dvc repro` skips finished stages; training resumes from its checkpoints).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.params import PARAMS_FILE, parse_params
from pipeline.params_edit import flatten, set_keys

MARKER = ".scale-workdir"  # written into every working copy this command made: safe to reuse, never a user's folder
REPORT_DIR = "scale"  # the run's report and per-stage logs, inside the working copy (git-ignored there)
# Files that `dvc repro` rewrites: a difference there is an output of the project's own runs, not a source change.
OUTPUTS = ("dvc.lock", "metrics/", "dvclive/", "plots/", "submissions/", "folds/")
_MISSING = object()  # a key params.yaml does not write


class WorkdirError(RuntimeError):
    """A working copy that cannot be made or used; the message says what to do."""


@dataclass(frozen=True)
class Workdir:
    path: Path
    commit: str  # the project commit it was cloned from
    reused: bool  # made by an earlier scale run


def _git(args: list[str], cwd: Path, strip: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WorkdirError(f"git {' '.join(args)} (in {cwd}) failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip() if strip else done.stdout


def project_root(start: Path) -> Path:
    """The git repository holding `start` (the project to clone)."""
    return Path(_git(["rev-parse", "--show-toplevel"], start))


def default_workdir(project: Path) -> Path:
    """Beside the project, not inside it: `../<project>-scale` (a few GB at full size)."""
    return project.parent / f"{project.name}-scale"


def uncommitted_sources(project: Path) -> list[str]:
    """Tracked files with changes that are not committed (outputs of the project's own runs left out): what a clone
    of the last commit does not have."""
    # not stripped: each porcelain line starts with two status columns, the first often a space
    lines = _git(["status", "--porcelain", "--untracked-files=no"], project, strip=False).splitlines()
    paths = [line[3:].split(" -> ")[-1] for line in lines if len(line) > 3]
    return [p for p in paths if not p.startswith(OUTPUTS)]


def prepare(project: Path, path: Path) -> Workdir:
    """Clone `project` into `path`, or reuse `path` when an earlier scale run made it.

    Raises:
        WorkdirError: when `path` is some other non-empty folder (never overwritten), or git fails.
    """
    path = path.absolute()
    if path.exists() and (path / MARKER).exists():
        return Workdir(path, _git(["rev-parse", "HEAD"], path), reused=True)
    if path.exists() and any(path.iterdir()):
        raise WorkdirError(
            f"{path} exists and is not a working copy made by `python -m pipeline scale` (no {MARKER} in it): "
            "choose another --workdir, or remove that folder"
        )
    if path.resolve().is_relative_to(project.resolve()):
        raise WorkdirError(f"--workdir {path} lies inside the project {project}: choose a folder outside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _git(["clone", "--quiet", str(project), str(path)], project.parent)
    (path / MARKER).write_text(f"made by python -m pipeline scale from {project}\n", encoding="utf-8")
    with open(path / ".git" / "info" / "exclude", "a", encoding="utf-8") as exclude:
        exclude.write(f"\n{MARKER}\n/{REPORT_DIR}/\n")
    return Workdir(path, _git(["rev-parse", "HEAD"], path), reused=False)


def write_params(workdir: Path, keys: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Set `keys` in the working copy's params.yaml (comments kept), validated first; returns (key, old, new) of
    the keys whose value changed.

    Raises:
        ParamsError: naming the key, before anything is written.
    """
    params_file = workdir / PARAMS_FILE
    text = params_file.read_text(encoding="utf-8")
    old = flatten(yaml.safe_load(text) or {})
    changed = {k: v for k, v in keys.items() if old.get(k, _MISSING) != v}
    new_text = set_keys(text, changed, str(params_file))
    parse_params(yaml.safe_load(new_text), str(params_file), check_model=True)
    params_file.write_text(new_text, encoding="utf-8")
    return [(k, old.get(k), v) for k, v in changed.items()]
