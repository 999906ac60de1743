"""The committed dvc.lock belongs to the committed code: every `pipeline/` file it records has the hash it records,
so a fresh clone's `dvc status` does not report the code as modified (and the committed metrics are the code's); and
the committed source model is the one it records."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import yaml

from tests.conftest import run
from tests.import_graph import ROOT

LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
CODE_DEPS = sorted(
    (stage, dep["path"], dep["md5"])
    for stage, body in LOCK.items()
    for dep in body.get("deps", [])
    if dep["path"].startswith("pipeline/")
)


@pytest.mark.parametrize(("stage", "path", "md5"), CODE_DEPS, ids=[f"{s}:{p}" for s, p, _ in CODE_DEPS])
def test_locked_code_hashes_match_the_tree(stage, path, md5):
    file = ROOT / path
    assert file.exists(), f"dvc.lock's {stage} depends on {path}, which is gone: run `make repro` and commit dvc.lock"
    assert hashlib.md5(file.read_bytes()).hexdigest() == md5, (
        f"{path} changed since dvc.lock was written for {stage}: run `make repro` and commit dvc.lock and metrics/"
    )


def test_the_committed_source_model_is_the_one_dvc_lock_records():
    """models/source is committed so that a fresh clone's `dvc repro` skips the source stage (README: Real faces):
    DVC itself must find the stage up to date, and the model must be the one params.yaml describes."""
    committed = subprocess.run(
        ["git", "ls-files", "models/source"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(committed) == ["models/source/backbone.pt", "models/source/source.json"]
    status = json.loads(run(["dvc", "status", "--json", "source"], ROOT).stdout or "{}")
    assert status == {}, (
        f"dvc status says the committed source model is stale: {status}. Retrain it (`dvc repro source`, then commit "
        "models/source and dvc.lock) or, where the change cannot alter it (a comment, a key it does not read), take "
        "the new hashes with `dvc commit -f source`"
    )
    summary = json.loads((ROOT / "models/source/source.json").read_text())
    source = yaml.safe_load((ROOT / "params.yaml").read_text())["source"]
    assert (summary["identities"], summary["image_size"]) == (source["identities"], source["image_size"])
