"""The committed dvc.lock belongs to the committed code: every `pipeline/` file it records has the hash it records,
so a fresh clone's `dvc status` does not report the code as modified (and the committed metrics are the code's)."""

from __future__ import annotations

import hashlib

import pytest
import yaml

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
