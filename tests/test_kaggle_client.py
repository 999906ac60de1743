"""Credential discovery (without importing kaggle) and the client wrapper against the local Kaggle."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kaggle_client import (
    CredentialsError,
    config_dir,
    credential_places,
    find_credentials,
    require_credentials,
)
from pipeline.params import KaggleParams
from pipeline.testing.fake_kaggle import FakeKaggle, isolated_env, render_tiny

ROOT = Path(__file__).resolve().parents[1]
CLS, VER = KaggleParams().classification, KaggleParams().verification
KEY = "s3cr3t-key-that-must-never-show"


def write_kaggle_json(folder: Path, mode: int = 0o600, **data: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def test_nothing_found_names_every_place(tmp_path: Path) -> None:
    env = {"KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")}
    assert find_credentials(env, tmp_path) is None
    with pytest.raises(CredentialsError) as err:
        require_credentials(env, tmp_path)
    text = str(err.value)
    for place in ("KAGGLE_API_TOKEN", "access_token", str(tmp_path / "cfg" / "kaggle.json"), "KAGGLE_CONFIG_DIR"):
        assert place in text
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in text
    assert len(credential_places(env, tmp_path)) == 5


def test_order_and_sources_never_hold_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path
    write_kaggle_json(home / ".kaggle", username="alice", key=KEY)
    found = find_credentials({}, home)
    assert (found.kind, found.source, found.username) == ("API key", str(home / ".kaggle" / "kaggle.json"), "alice")
    env = {"KAGGLE_USERNAME": "bob", "KAGGLE_KEY": KEY}
    assert find_credentials(env, home).source == "KAGGLE_USERNAME/KAGGLE_KEY"
    (home / ".kaggle" / "access_token").write_text("tok-" + KEY)
    assert find_credentials(env, home).kind == "access token"  # tokens come first, as in kaggle 2.2.5
    assert find_credentials({"KAGGLE_API_TOKEN": "x" + KEY}, home).source == "KAGGLE_API_TOKEN"
    token_file = tmp_path / "tokfile"
    token_file.write_text(KEY)
    token_file.chmod(0o600)
    assert str(token_file) in find_credentials({"KAGGLE_API_TOKEN": str(token_file)}, home).source
    for creds in (find_credentials(env, home), find_credentials({}, home)):
        assert KEY not in repr(creds)
    assert KEY not in caplog.text


def test_config_dir_follows_the_client(tmp_path: Path) -> None:
    assert config_dir({"KAGGLE_CONFIG_DIR": "/x/y"}, tmp_path) == Path("/x/y")
    if sys.platform.startswith("linux"):
        assert config_dir({"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, tmp_path) == tmp_path / "xdg" / "kaggle"
    (tmp_path / ".kaggle").mkdir()
    assert config_dir({}, tmp_path) == tmp_path / ".kaggle"
    write_kaggle_json(tmp_path / "cfg", username="c", key=KEY)
    assert find_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")}, tmp_path).username == "c"


def test_readable_kaggle_json_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_kaggle_json(tmp_path / ".kaggle", mode=0o644, username="alice", key=KEY)
    with caplog.at_level(logging.WARNING):
        assert find_credentials({}, tmp_path) is not None
    assert f"chmod 600 {path}" in caplog.text and KEY not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        find_credentials({}, tmp_path)
    assert "readable" not in caplog.text


def run_client(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run client code in a fresh process: kaggle reads its environment once, at import."""
    prelude = "import logging, sys; logging.basicConfig(level=logging.DEBUG)\nfrom pipeline.kaggle_client import *\n"
    script = prelude + code
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


GUARDED = """
try:
    {call}
except KaggleError as err:
    print("ERROR:", err)
    sys.exit(3)
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return render_tiny(tmp_path_factory.mktemp("tiny"))


def test_import_is_lazy_and_commands_work_without_credentials(tmp_path: Path) -> None:
    code = (
        "import sys, pipeline.cli, pipeline.sources.kaggle, pipeline.kaggle_client, pipeline.commands.submit\n"
        "pipeline.cli.build_parser()\n"
        "assert 'kaggle' not in sys.modules and 'kagglesdk' not in sys.modules, 'kaggle imported eagerly'\n"
    )
    env = {**isolated_env(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "--task" in helped.stdout


def test_client_lists_submits_and_never_prints_the_key(tiny, tmp_path: Path) -> None:
    with FakeKaggle(*tiny, credentials=("tester", KEY)) as srv:
        env = {**isolated_env(tmp_path / "home", srv), "KAGGLE_USERNAME": "tester", "KAGGLE_KEY": KEY}
        csv = tmp_path / "c.csv"
        csv.write_bytes((tiny[1] / "classification_solution.csv").read_bytes())
        code = (
            "c = KaggleClient()\n"
            f"files = c.list_files({VER!r})\n"
            "print('FILES', len(files), sum(f.size for f in files))\n"
            f"print('TOTAL', c.total_bytes({VER!r}), c.total_bytes({CLS!r}, max_pages=2, page_size=10))\n"
            f"ref = c.submit(__import__('pathlib').Path({str(csv)!r}), {CLS!r}, 'perfect')\n"
            f"subs = c.submissions({CLS!r})\n"
            "print('SUB', ref, subs[0].ref, subs[0].status, subs[0].public_score, subs[0].private_score)\n"
        )
        done = run_client(code, env, tmp_path)
        archive_size = srv._competitions[CLS].archive.stat().st_size
    assert done.returncode == 0, done.stderr
    files = srv._competitions[VER].files
    listed = sum(path.stat().st_size for _, path in files)
    assert f"FILES {len(files)} {listed}\n" in done.stdout
    # Past the page limit the size comes from the archive's Content-Length (nothing is downloaded).
    assert f"TOTAL {listed} {archive_size}\n" in done.stdout
    sub = srv.submissions[0]
    assert f"SUB {sub.ref} {sub.ref} COMPLETE 1.0 1.0" in done.stdout
    assert KEY not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("rules", "403 Forbidden): join the competition and accept its rules at https://www.kaggle.com/competitions/"),
        ("unknown", "has no competition 'no-such-slug' (404 Not Found)"),
        ("wrong-key", "rejected the API key from KAGGLE_USERNAME/KAGGLE_KEY (401 Unauthorized)"),
        ("network", "network failure while trying to list the data files: cannot reach http://localhost"),
    ],
)
def test_each_error_is_one_clear_message(tiny, tmp_path: Path, case: str, expect: str) -> None:
    slug = "no-such-slug" if case == "unknown" else VER
    with FakeKaggle(*tiny, credentials=("tester", KEY), rules_not_accepted=[VER]) as srv:
        env = {**isolated_env(tmp_path / "home", srv), "KAGGLE_USERNAME": "tester", "KAGGLE_KEY": KEY}
        if case == "wrong-key":
            env["KAGGLE_KEY"] = "not-" + KEY
        if case == "network":
            with socket.socket() as s:  # a port nobody listens on
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env["http_proxy"] = env["HTTP_PROXY"] = f"http://127.0.0.1:{port}"
        call = (
            f"KaggleClient().list_files({slug!r})"
            if case != "rules"
            else f"KaggleClient().download({slug!r}, __import__('pathlib').Path('dl'))"
        )
        done = run_client(GUARDED.format(call=call), env, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert expect in done.stdout
    assert "Traceback" not in done.stderr and KEY not in done.stdout + done.stderr


def test_no_credentials_fails_before_importing_kaggle(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home")
    code = "try:\n    KaggleClient()\nexcept KaggleError as err:\n    print('ERROR:', err, 'kaggle' in sys.modules)\n"
    done = run_client(code, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no Kaggle credentials found" in done.stdout and "KAGGLE_CONFIG_DIR" in done.stdout
    assert done.stdout.rstrip().endswith("False")  # kaggle (which would authenticate and print) never imported
