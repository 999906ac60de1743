"""`python -m pipeline recipe`: one command switches params.yaml to a recipe, changing exactly its keys, validated,
comments kept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import recipes
from pipeline.params import ParamsError, parse_params
from pipeline.params_edit import flatten

ROOT = Path(__file__).resolve().parents[2]
COMPETITION = ROOT / "recipes" / "competition.yaml"
SCRATCH = ROOT / "recipes" / "scratch.yaml"
ENSEMBLE = ROOT / "recipes" / "ensemble.yaml"


def comments(text: str) -> list[str]:
    return re.findall(r"#.*", text)


@pytest.mark.parametrize("name", recipes.available(ROOT / "recipes"))
def test_each_recipe_changes_exactly_its_keys_into_valid_params(name: str):
    text = (ROOT / "params.yaml").read_text()
    recipe = recipes.load_recipe(ROOT / "recipes" / f"{name}.yaml")
    new_text, changes = recipes.apply_recipe(text, recipe)
    parse_params(yaml.safe_load(new_text))  # valid, model name included
    old, new = flatten(yaml.safe_load(text)), flatten(yaml.safe_load(new_text))
    assert set(old) == set(new)
    changed = {k for k in new if new[k] != old[k]}
    assert changed == {k for k, v in recipe.items() if old[k] != v} == {c.key for c in changes}
    assert all(new[k] == v for k, v in recipe.items())
    assert comments(new_text) == comments(text)  # every comment kept, in order


def test_what_the_competition_recipe_is():
    """The issue's list: full-width backbone, margin head, a GPU's epoch budget and batch, workers; and the fold
    ensemble, which the CPU default leaves out for time."""
    recipe = recipes.load_recipe(COMPETITION)
    assert len(recipe["folds.train"]) > 1
    assert recipe["model.width"] == 1.0
    assert recipe["loss.head"] in ("arcface", "cosface", "subcenter_arcface", "sphereface")
    assert recipe["train.device"] == "cuda" and isinstance(recipe["train.epochs"], int)
    assert recipe["train.batch_size"] >= 256 and recipe["train.num_workers"] >= 4


def test_what_the_scratch_recipe_is():
    """No source model, the fold models taking its steps back (README: Real faces): the defaults before the source
    model, and nothing else, so it measures transfer against the same per-fold budget."""
    recipe = recipes.load_recipe(SCRATCH)
    assert recipe == {"source.identities": 0, "train.steps": 920}
    new_text, _ = recipes.apply_recipe((ROOT / "params.yaml").read_text(), recipe)
    params = parse_params(yaml.safe_load(new_text))
    assert params.source.identities == 0 and params.train.steps + params.finetune.steps == 1040
    default = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert default.source.identities > 0  # the recipe switches something off, not nothing


def test_recipe_keys_must_be_params_keys(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 256\n")
    with pytest.raises(ParamsError, match="train.batch_sise: not a params key; did you mean 'train.batch_size'"):
        recipes.load_recipe(bad)
    with pytest.raises(ParamsError, match=r"no recipe 'nope'.*competition"):
        recipes.recipe_path("nope", ROOT / "recipes")


def test_values_are_checked_with_the_params_they_complete(tmp_path: Path):
    text = (ROOT / "params.yaml").read_text()
    with pytest.raises(ParamsError, match="train.batch_size"):
        recipes.apply_recipe(text, {"train.batch_size": 0})


def _recipe(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "recipe", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_command_applies_once_then_has_nothing_to_change(tmp_path: Path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    dry = _recipe("competition", "--params", str(params), "--dry-run")
    assert dry.returncode == 0 and "would change" in dry.stdout and params.read_text() == before
    done = _recipe("competition", "--params", str(params))
    assert done.returncode == 0, done.stderr
    assert re.search(r"model\.width\s+0\.5 -> 1\.0", done.stdout) and "undo: git checkout" in done.stdout
    assert flatten(yaml.safe_load(params.read_text()))["loss.head"] == recipes.load_recipe(COMPETITION)["loss.head"]
    again = _recipe("competition", "--params", str(params))
    assert again.returncode == 0 and "nothing to change" in again.stdout


def test_the_command_lists_recipes_prints_an_experiment_and_names_errors():
    listed = _recipe()
    assert listed.returncode == 0 and listed.stdout.startswith("competition ")
    exp = _recipe("competition", "--exp")
    assert exp.returncode == 0 and exp.stdout.startswith("dvc exp run -n competition -S model.width=1.0 ")
    missing = _recipe("nope")
    assert missing.returncode == 1 and "error: no recipe 'nope'" in missing.stderr


def test_what_the_ensemble_recipe_is():
    """Two fold models where the default trains one (README: Real faces), and nothing else."""
    recipe = recipes.load_recipe(ENSEMBLE)
    assert recipe == {"folds.train": [0, 1]}
    default = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert default.folds.train == [0]
