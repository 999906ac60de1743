"""Params recipes: small YAML overlays under `recipes/` holding only the keys that change for one setting.

The defaults of `params.yaml` are right for small sets on a CPU; a recipe (`recipes/competition.yaml`: the real
competition's size on a GPU) switches a project over with one command, `python -m pipeline recipe NAME`, which
rewrites those keys of `params.yaml` in place (comments kept, `pipeline.params_edit`) after checking that the
result is valid params (`pipeline.params`).
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.params import Params, ParamsError, parse_params
from pipeline.params_edit import flatten, merge, nest, set_keys, yaml_scalar

RECIPES_DIR = Path("recipes")  # relative to the project root, like params.yaml
_MISSING = object()  # a key the params file does not write


@dataclass(frozen=True)
class Change:
    key: str  # dotted params key
    old: Any  # None also when the key was not written in the file (see `written`)
    new: Any
    written: bool = True  # whether the params file wrote the key before


def available(folder: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def recipe_path(name: str, folder: Path = RECIPES_DIR) -> Path:
    """A recipe file: `name` itself when it is a file, else `folder/<name>.yaml`.

    Raises:
        ParamsError: naming the recipes there are.
    """
    path = Path(name)
    if path.is_file():
        return path
    path = folder / f"{name}.yaml"
    if path.is_file():
        return path
    names = ", ".join(available(folder)) or "none"
    raise ParamsError(f"no recipe {name!r}: not a file, and {path} does not exist (recipes in {folder}/: {names})")


def load_recipe(path: Path) -> dict[str, Any]:
    """The recipe's keys by dotted name. Every key must be a params key; the values are checked by `apply_recipe`,
    with the params they complete (a value may be valid only next to another key's)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: a recipe is a mapping of params sections, e.g. `train: {{batch_size: 256}}`")
    keys = flatten(raw)
    known = flatten(Params().model_dump(mode="json"))  # values are checked with the params they are applied to
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamsError(f"{path}: {key}: not a params key{hint}")
    return keys


def describe(path: Path) -> str:
    """The recipe's first comment line, without the `#`."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def apply_recipe(params_text: str, recipe: dict[str, Any], source: str = "params.yaml") -> tuple[str, list[Change]]:
    """`params_text` with the recipe's keys set (comments kept) and what changed; the result is validated.

    Keys already at the recipe's value are not listed as changes.

    Raises:
        ParamsError: when the result is not valid params (named in `source`'s terms, after the recipe).
    """
    old = yaml.safe_load(params_text) or {}
    old_flat = flatten(old)
    changes = [
        Change(k, old_flat.get(k), v, k in old_flat) for k, v in recipe.items() if old_flat.get(k, _MISSING) != v
    ]
    new_text = set_keys(params_text, {c.key: c.new for c in changes}, source)
    parse_params(merge(old, nest(recipe)), f"{source} with the recipe", check_model=True)
    return new_text, changes


def exp_run_command(recipe: dict[str, Any], name: str) -> str:
    """The `dvc exp run` line that runs the recipe as an experiment, leaving params.yaml as it is."""
    flags = " ".join(f"-S {shlex.quote(f'{k}={yaml_scalar(v)}')}" for k, v in recipe.items())
    return f"dvc exp run -n {shlex.quote(name)} {flags}"
