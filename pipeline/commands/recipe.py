"""`python -m pipeline recipe NAME`: switch params.yaml to a recipe (`recipes/NAME.yaml`) in one command.

Only the recipe's keys change, in place, with params.yaml's comments kept; the result is validated before anything
is written, and the changed keys are printed (old -> new). `--dry-run` only prints them; `--exp` prints the
`dvc exp run -S ...` line that runs the recipe as an experiment instead. Without NAME, lists the recipes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.params import PARAMS_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a recipe under recipes/ (e.g. competition) or a YAML file")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file to change (default: %(default)s)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    how.add_argument("--exp", action="store_true", help="print the `dvc exp run -S ...` line for it; write nothing")


def main(args: argparse.Namespace) -> int:
    from pipeline import recipes
    from pipeline.io import write_text
    from pipeline.params import ParamsError
    from pipeline.params_edit import ParamsEditError, yaml_scalar

    if not args.name:
        names = recipes.available()
        if not names:
            print(f"no recipes in {recipes.RECIPES_DIR}/ (run from the project root)", file=sys.stderr)
            return 1
        for name in names:
            print(f"{name:16} {recipes.describe(recipes.RECIPES_DIR / f'{name}.yaml')}")
        print("\napply one: python -m pipeline recipe NAME   (--dry-run: show the changes; --exp: as an experiment)")
        return 0
    try:
        path = recipes.recipe_path(args.name)
        recipe = recipes.load_recipe(path)
        if args.exp:
            print(recipes.exp_run_command(recipe, path.stem))
            return 0
        text = args.params.read_text(encoding="utf-8")
        new_text, changes = recipes.apply_recipe(text, recipe, str(args.params))
    except (ParamsError, ParamsEditError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not changes:
        print(f"{args.params} already holds every key of {path}: nothing to change")
        return 0
    verb = "would change" if args.dry_run else "changed"
    print(f"{args.params}: {len(changes)} key{'s' if len(changes) > 1 else ''} {verb} by {path}:")
    width = max(len(c.key) for c in changes)
    for c in changes:
        old = yaml_scalar(c.old) if c.written else "(not written)"
        print(f"  {c.key:{width}}  {old} -> {yaml_scalar(c.new)}")
    if args.dry_run:
        return 0
    write_text(args.params, new_text)
    print(f"undo: git checkout {args.params}    next: dvc repro (or dvc exp run -n {path.stem})")
    return 0
