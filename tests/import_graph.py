"""The `pipeline` modules a module imports, directly or not (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
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

    Package `__init__.py` files are left out: they hold only docstrings here.
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


if __name__ == "__main__":
    import sys

    for mod in sys.argv[1:]:
        print(mod)
        for f in sorted(closure(mod)):
            print("      -", f.as_posix())
