"""The `pipeline` modules a module imports, directly or not (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def direct_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n.split(".")[0] == "pipeline" and module_file(n)}


def closure(module: str) -> set[Path]:
    """Files of `module` and every pipeline module it imports, as paths relative to the project root.

    Package `__init__.py` files are left out: they hold docstrings, and `pipeline/stages/__init__.py` a check that
    the environment has the packages, neither of which changes what a stage writes.
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(module_file(name)))
    files = {module_file(n).relative_to(ROOT) for n in seen}
    return {f for f in files if f.name != "__init__.py"}


def update_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> None:
    """Rewrite each stage's `pipeline/` deps in place from the imports, keeping every other line as it is."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, module, indent = [], None, ""
    for line in lines:
        match = re.search(r"python -m (pipeline\.stages\.\w+)", line)
        if match:
            module = match.group(1)
        dep = re.match(r"(\s+)- pipeline/\S+\.py\s*$", line)
        if dep and module:
            if indent != dep.group(1):  # first code dep of this stage: write the whole list here
                indent = dep.group(1)
                out.extend(f"{indent}- {f.as_posix()}\n" for f in sorted(closure(module)))
            continue
        if not dep:
            indent = ""
        out.append(line)
    path.write_text("".join(out), encoding="utf-8")


if __name__ == "__main__":
    # python -m tests.import_graph: bring dvc.yaml's code deps in step with the imports.
    update_dvc_yaml()
