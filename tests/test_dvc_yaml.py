"""dvc.yaml lists, for each stage, exactly the library files its entry point imports (directly or not).

Too few and an edit does not re-run the stage; too many and editing e.g. the submission writer retrains every
fold. The import graph counts function-level (lazy) imports too.
"""

import re
from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_body(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


@pytest.mark.parametrize("name", sorted(DVC))
def test_code_deps_match_imports(name):
    body = stage_body(DVC[name])
    module = re.match(r"python -m (\S+)", body["cmd"]).group(1)
    listed = {Path(d) for d in body["deps"] if isinstance(d, str) and d.startswith("pipeline/")}
    assert listed == closure(module), (
        f"stage {name}: deps differ from the imports of {module}; run: python -m tests.import_graph"
    )


@pytest.mark.parametrize("name", sorted(DVC))
def test_paths_on_the_command_line_are_declared(name):
    """Every path the command reads or writes is a dep or an output, so DVC sees the whole file graph."""
    body = stage_body(DVC[name])
    declared = set()
    for key in ("deps", "outs", "metrics", "plots"):
        for entry in body.get(key, []):
            declared.add(entry if isinstance(entry, str) else next(iter(entry)))
    args = re.findall(r"--(?!fold|params)[\w-]+ (\S+)", body["cmd"])
    for path in args:
        assert any(path == d or path.startswith(d.rstrip("/") + "/") or d.startswith(path + "/") for d in declared), (
            f"stage {name}: {path} is on the command line but neither a dep nor an output"
        )


def test_folds_foreach_follows_params():
    assert DVC["train"]["foreach"] == "${folds.train}"
    assert DVC["embed"]["foreach"] == "${folds.train}"
