"""The DVC stage entry points (`python -m pipeline.stages.<name>`, see dvc.yaml).

dvc.yaml calls `python`: whichever one is first on PATH. Before any stage runs, this checks (by `find_spec`, without
importing anything) that it is an interpreter with the project's packages, and otherwise says which it is, what it
lacks and what to do, instead of a bare ModuleNotFoundError from deep inside a stage.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

# Import names of the packages the stages load (requirements.txt installs them).
REQUIRED = (
    "numpy",
    "pandas",
    "torch",
    "timm",
    "albumentations",
    "cv2",
    "pydantic",
    "yaml",
    "dvclive",
    "sklearn",
    "pytorch_metric_learning",
    "matplotlib",
    "tqdm",
)


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if find_spec(name) is None]


def wrong_interpreter_message(missing: list[str]) -> str:
    venv = Path(__file__).resolve().parents[2] / ".venv"
    how = (
        f"The project's environment is {venv}: activate it before calling dvc (`source .venv/bin/activate`, then "
        "`dvc repro` or `dvc exp run`), or run through make (`make repro`), which uses it."
        if (venv / "bin" / "python").exists()
        else "Create the project's environment with `make setup` (it makes .venv from requirements.txt), then "
        "`source .venv/bin/activate` before calling dvc, or run through make (`make repro`)."
    )
    return (
        f"error: the pipeline stages are running under {sys.executable}, which lacks {', '.join(missing)}.\n"
        f"This is not the project's Python (dvc.yaml runs `python`, the first on PATH). {how}\n"
    )


_missing = missing_packages()
if _missing:
    sys.stderr.write(wrong_interpreter_message(_missing))
    raise SystemExit(1)
