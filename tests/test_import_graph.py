"""The `pipeline` package has no import cycle, function-local (lazy) imports included: a module that needs a lazy
import to break a cycle is a module with two purposes."""

from __future__ import annotations

from tests.import_graph import ROOT, direct_imports


def package_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    # `from pipeline import x` also names the package itself; its __init__ files hold docstrings only
    return {
        name: {
            m for m in direct_imports(path) if m in modules and m != name and not (ROOT / m.replace(".", "/")).is_dir()
        }
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first = last), or None; iterative DFS with colours."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
            elif colour[child] == 1:
                path = [n for n, _ in stack]
                return path[path.index(child) :] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_pipeline():
    graph = package_graph()
    assert "pipeline.engine" in graph and "pipeline.device" in graph["pipeline.engine"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
