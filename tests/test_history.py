"""history.csv's `git_commit`: `-dirty` for source changes only, never for what `dvc repro` and `submit` rewrite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from pipeline.history import GENERATED, dirty_paths, dvc_output_patterns, git_commit, is_generated

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}


def git(args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def test_output_patterns_of_the_projects_dvc_yaml() -> None:
    patterns = dvc_output_patterns(ROOT / "dvc.yaml")
    for path in (
        "metrics/ensemble.json",
        "plots/roc.png",
        "plots/roc.csv",
        "plots/augment_preview.png",
        "dvclive/fold0/metrics.json",
        "dvclive/fold1/plots/metrics/val_auc.tsv",  # a file under a directory output
        "folds/folds.csv",
        "models/fold3/model.pt",
        "submissions/verification.csv",
        "submissions/leaderboard.csv",  # a top-level plot: `leaderboard` rewrites it, no source edit
        "plots/analysis/false_accepts/3.png",
        *GENERATED,
    ):
        assert is_generated(path, patterns), path
    for path in ("params.yaml", "dvc.yaml", "pipeline/models.py", "README.md", "submissions/notes.txt", "metrics.py"):
        assert not is_generated(path, patterns), path
    assert dvc_output_patterns(ROOT / "no-such-dvc.yaml") == []


def test_a_reproduced_tree_is_clean_and_a_code_change_is_dirty(tmp_path: Path) -> None:
    repo = tmp_path
    stage = {
        "foreach": [0, 1],
        "do": {
            "cmd": "python train.py ${item}",
            "outs": [{"models/fold${item}": {"persist": True}}],
            "metrics": [{"dvclive/fold${item}/metrics.json": {"cache": False}}],
            "plots": [{"dvclive/fold${item}/plots/metrics": {"cache": False, "x": "step"}}],
        },
    }
    ensemble = {"cmd": "python e.py", "metrics": [{"metrics/ensemble.json": {"cache": False}}], "plots": ["roc.png"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage, "ensemble": ensemble}}))
    files = {
        "params.yaml": "seed: 0\n",
        "code.py": "x = 1\n",
        "dvc.lock": "a\n",
        "roc.png": "png\n",
        "metrics/ensemble.json": "{}\n",
        "dvclive/fold0/metrics.json": "{}\n",
        "dvclive/fold1/plots/metrics/val_auc.tsv": "step\tval_auc\n",
        "submissions/history.csv": "time\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(["init", "-q"], repo)
    git(["add", "-A"], repo)
    git(["commit", "-qm", "c"], repo)
    head = git(["rev-parse", "HEAD"], repo).strip()
    assert git_commit(repo) == head

    # What `dvc repro` and `submit` rewrite (and a deleted output): still clean, from any folder of the repo.
    for name in ("dvc.lock", "roc.png", "metrics/ensemble.json", "dvclive/fold1/plots/metrics/val_auc.tsv"):
        (repo / name).write_text("changed\n")
    (repo / "dvclive/fold0/metrics.json").unlink()
    (repo / "submissions/history.csv").write_text("time\nnow\n")
    git(["add", "roc.png"], repo)  # staged or not
    (repo / "untracked.txt").write_text("scratch\n")  # untracked files never count
    assert git_commit(repo) == head and git_commit(repo / "metrics") == head
    assert dirty_paths(repo) == []

    (repo / "params.yaml").write_text("seed: 1\n")
    assert git_commit(repo) == head + "-dirty"
    assert dirty_paths(repo) == ["params.yaml"]
    git(["checkout", "params.yaml"], repo)
    git(["mv", "code.py", "renamed.py"], repo)
    assert dirty_paths(repo) == ["renamed.py"]
    assert git_commit(tmp_path / "..") == ""  # outside any repository
