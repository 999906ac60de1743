"""`python -m pipeline`: every command listed, one usage shape, help without the heavy imports, bench forwarded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "pandas", "timm", "albumentations", "matplotlib", "sklearn", "kaggle", "dvc")


def test_top_level_help_lists_every_command_and_the_local_kaggle(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline ")
    for name in ("validate", "score", "submit", "leaderboard", "experiments", "bench"):
        assert f"    {name} " in out, name
    assert "python -m pipeline.testing.fake_kaggle --project . --lifetime 0" in out
    assert "KAGGLE_API_ENVIRONMENT=LOCALHOST http_proxy=http://127.0.0.1:7777" in out


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS if n not in cli.FORWARDED])
def test_command_usage_names_python_m_pipeline(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: python -m pipeline {name} ")


def test_help_imports_nothing_heavy() -> None:
    """Build the parser and print every command's help in a fresh interpreter: no torch, numpy or pandas loaded.

    What keeps `--help` under a second; a module check, not a timing, so a loaded machine cannot flake it.
    """
    code = (
        "import contextlib, io, json, sys\n"
        "from pipeline import cli\n"
        "parser = cli.build_parser()\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    parser.print_help()\n"
        "    for name in cli.COMMANDS:\n"
        "        if name not in cli.FORWARDED:\n"
        "            with contextlib.suppress(SystemExit):\n"
        "                parser.parse_args([name, '--help'])\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "print(len(out.getvalue()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded, chars = done.stdout.splitlines()
    assert json.loads(loaded) == []
    assert int(chars) > 2000  # every help was printed


def test_bench_is_forwarded_whole(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["bench", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--small" in out and "--only" in out  # pipeline.bench's own options
    with pytest.raises(SystemExit) as done:
        cli.main(["bench", "--only", "no-such-bench"])
    assert done.value.code == 2 and "unknown benchmark(s) no-such-bench" in capsys.readouterr().err


def test_unknown_arguments_still_fail(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["validate", "a.csv", "b.csv"])
    assert done.value.code == 2 and "unrecognized arguments: b.csv" in capsys.readouterr().err
