"""The docs match the code: README's stage graph is what `dvc dag` draws from dvc.yaml, and every local file,
module or name the README and docs/*.md cite exists."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
DAG_BEGIN = "<!-- dvc dag: begin -->"
DAG_END = "<!-- dvc dag: end -->"
DAG_COMMAND = ("dag", "--md")
REGENERATE = (
    "regenerate it: replace the lines between the markers with the output of "
    f"`.venv/bin/dvc {' '.join(DAG_COMMAND)}` run in the repository root"
)

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Paths of the project's own files as the docs write them in backticks: `pipeline/params.py`, `.ci/run`.
SOURCE_PATH = re.compile(
    r"^(?:pipeline|tests|docs|\.ci)/[\w./-]*[\w/]$|^(?:params\.yaml|dvc\.yaml|requirements\.txt|Makefile|README\.md)$"
)
# Dotted names of the project's modules and what they define: `pipeline.testing.fake_kaggle`,
# `pipeline.losses.build_objective(...)`, also inside `python -m pipeline.stages.embed ...` commands.
MODULE_NAME = re.compile(r"(?<![\w./-])pipeline(?:\.\w+)+")


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def run_dvc_dag() -> str:
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip(f"{dvc} not found (dvc is installed with requirements.txt)")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [str(dvc), *DAG_COMMAND], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"`dvc {' '.join(DAG_COMMAND)}` failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def between_markers(text: str) -> str:
    assert text.count(DAG_BEGIN) == 1 and text.count(DAG_END) == 1, (
        f"README.md must hold exactly one {DAG_BEGIN} ... {DAG_END} block; {REGENERATE}"
    )
    start = text.index(DAG_BEGIN) + len(DAG_BEGIN)
    end = text.index(DAG_END)
    assert start < end, f"{DAG_END} comes before {DAG_BEGIN} in README.md"
    return text[start:end]


def test_readme_stage_graph_is_dvc_dag():
    block = between_markers(README.read_text(encoding="utf-8"))
    expected = run_dvc_dag()
    assert block.strip() == expected.strip(), (
        f"README.md's stage graph between {DAG_BEGIN} and {DAG_END} is not what dvc.yaml (with params.yaml's "
        f"folds.train) gives today; {REGENERATE}.\n--- README.md\n{block.strip()}\n--- dvc dag\n{expected.strip()}"
    )


def without_code(text: str) -> str:
    """Markdown text with fenced code blocks and code spans blanked out (links inside them are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub(" ", text)


def local_link_targets(text: str) -> list[str]:
    """Targets of the markdown links `[text](target)` that name a file: no URL scheme, not only an anchor."""
    targets = []
    for match in LINK.finditer(without_code(text)):
        target = match.group(1)
        if SCHEME.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0].split("?", 1)[0])
    return targets


def test_link_parser():
    text = (
        "See [bench](docs/BENCH.md), [a section](#stage-graph), [dvc](https://dvc.org), [mail](mailto:a@b.c),\n"
        '[anchor in a file](docs/LOSSES.md#two-phases "title"), ![img](plots/roc.png) and `[code](not/a/link.md)`.\n'
        "```\n[fenced](not/a/link/either.md)\n```\n"
    )
    assert local_link_targets(text) == ["docs/BENCH.md", "docs/LOSSES.md", "plots/roc.png"]


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_linked_files_exist(doc: Path):
    missing = [t for t in local_link_targets(doc.read_text(encoding="utf-8")) if not (doc.parent / t).exists()]
    assert not missing, f"{doc_id(doc)} links to files that do not exist (relative to {doc_id(doc.parent)}/): {missing}"


def code_spans(text: str) -> list[str]:
    """Contents of inline code spans and of fenced code blocks."""
    spans = [m.group(0) for m in FENCE.finditer(text)]
    spans += [m.group(2).strip() for m in CODE_SPAN.finditer(FENCE.sub("", text))]
    return spans


def test_code_span_parser():
    text = "Run `pipeline/params.py` and `data/raw`.\n```bash\npython -m pipeline.stages.embed --out x\n```\n"
    spans = code_spans(text)
    assert "pipeline/params.py" in spans and "data/raw" in spans
    assert any("pipeline.stages.embed" in s for s in spans)
    assert [s for s in spans if SOURCE_PATH.match(s)] == ["pipeline/params.py"]


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_cited_source_paths_exist(doc: Path):
    """Backtick paths of the project's own files (`pipeline/...`, `tests/...`, `docs/...`, `.ci/...`, top-level
    files); outputs such as `data/raw` or `models/fold<k>/` are written by the pipeline and not checked."""
    cited = sorted({s for s in code_spans(doc.read_text(encoding="utf-8")) if SOURCE_PATH.match(s)})
    missing = [s for s in cited if not (ROOT / s).exists()]
    assert not missing, f"{doc_id(doc)} cites files that do not exist (relative to the repository root): {missing}"


@cache
def top_level_names(module: Path) -> frozenset[str]:
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def resolve_module_name(dotted: str) -> str | None:
    """None when `dotted` (pipeline.a.b[.name]) is a module, package or a top-level name of one; else the problem."""
    parts = dotted.split(".")
    path = ROOT
    for i, part in enumerate(parts):
        if (path / part).is_dir() and (path / part / "__init__.py").exists():
            path = path / part
            continue
        if (path / f"{part}.py").exists():
            path = path / f"{part}.py"
            rest = parts[i + 1 :]
            if rest and rest[0] not in top_level_names(path):
                return f"{dotted}: {path.relative_to(ROOT)} defines no {rest[0]!r}"
            return None
        if i < 2:
            return f"{dotted}: no module {'.'.join(parts[: i + 1])}"
        init = path / "__init__.py"
        if part not in top_level_names(init):
            return f"{dotted}: {init.relative_to(ROOT)} defines no {part!r}"
        return None
    return None


def test_module_name_resolver():
    assert resolve_module_name("pipeline.params") is None
    assert resolve_module_name("pipeline.testing.fake_kaggle") is None
    assert resolve_module_name("pipeline.params.load_params") is None
    assert resolve_module_name("pipeline.no_such_module") is not None
    assert resolve_module_name("pipeline.params.no_such_name") is not None


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_cited_modules_exist(doc: Path):
    """Dotted module names in code (`python -m pipeline.stages.embed`, `pipeline.losses.build_objective`)."""
    names = sorted({m.group(0) for s in code_spans(doc.read_text(encoding="utf-8")) for m in MODULE_NAME.finditer(s)})
    problems = [p for p in map(resolve_module_name, names) if p]
    assert not problems, f"{doc_id(doc)} cites modules or names that do not exist: {problems}"


def readme_figure(label: str) -> str:
    """The figure cell of the README results row whose first cell is `label`."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"README has no results row {label!r}")


def test_readme_results_are_the_committed_metrics():
    """The README's validation figures are metrics/ensemble.json's (what `make repro` wrote), not typed copies."""
    import json

    m = json.loads((ROOT / "metrics/ensemble.json").read_text())
    folds = [m["folds"][f"fold{k}"]["val_auc"] for k in range(len(m["folds"]))]
    names = " / ".join(f"fold {k}" for k in range(len(folds)))  # as many as params.yaml's folds.train trains
    expected = {
        f"validation verification AUC: {names} / ensemble": " / ".join(f"{a:.4f}" for a in [*folds, m["val_auc"]]),
        "raw-pixel cosine baseline AUC": f"{m['pixel_baseline_auc']:.4f}",
        "validation EER, TAR@FAR=1e-3 (ensemble)": f"{m['val_eer']:.4f}, {m['val_tar_at_far']:.4f}",
        "validation classification accuracy (ensemble, out of fold)": f"{m['val_accuracy']:.4f}",
    }
    for label, figure in expected.items():
        assert readme_figure(label) == figure, f"README row {label!r}: write {figure} (from metrics/ensemble.json)"
