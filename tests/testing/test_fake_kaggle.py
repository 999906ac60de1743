"""The local Kaggle, driven by the real `kaggle` executable (kaggle 2.x): listing, download, submit, scores."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.params import KaggleParams, SubmissionParams
from pipeline.submission import score_classification, score_verification
from pipeline.testing.fake_kaggle import FakeKaggle, isolated_env, public_mask, render_tiny

KAGGLE = str(Path(sys.executable).with_name("kaggle"))
CLS, VER = KaggleParams().classification, KaggleParams().verification
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return render_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def server(tiny: tuple[Path, Path]):
    with FakeKaggle(*tiny, top_folder="11-785hw2p2-s20") as srv:
        yield srv


def kaggle(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([KAGGLE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(tmp_path: Path, server: FakeKaggle) -> dict:
    e = isolated_env(tmp_path / "home", server)
    e.update(KAGGLE_USERNAME="tester", KAGGLE_KEY="k3y-not-for-printing")
    return e


def test_public_mask_is_fixed_and_sized() -> None:
    a, b = public_mask(1000, 0.3, seed=4), public_mask(1000, 0.3, seed=4)
    assert a.dtype == bool and a.sum() == 300 and (a == b).all()
    assert not (a == public_mask(1000, 0.3, seed=5)).all()
    assert public_mask(5, 1.0).all()
    with pytest.raises(ValueError):
        public_mask(10, 0.0)


def test_files_and_download_with_the_real_client(server: FakeKaggle, env: dict, tmp_path: Path, tiny) -> None:
    comp, _ = tiny
    listing = kaggle(["competitions", "files", CLS, "--page-size", "500", "-v"], env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    names = [line.split(",")[0] for line in listing.stdout.splitlines()[1:] if line]
    assert "test_order_classification.txt" in names
    assert not any(n.startswith(("validation_verification", "test_trials")) for n in names)  # the other half
    dl = kaggle(["competitions", "download", VER, "-p", "dl"], env, tmp_path)
    assert dl.returncode == 0, dl.stderr
    archive = tmp_path / "dl" / f"{VER}.zip"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    got = tmp_path / "x" / "11-785hw2p2-s20"
    assert sorted(p.name for p in got.iterdir()) == sorted(
        ["validation_verification", "validation_trials_verification.txt", "test_verification"]
        + ["test_trials_verification_student.txt"]
    )
    cmp = filecmp.dircmp(got / "test_verification", comp / "test_verification")
    assert cmp.left_list and not cmp.diff_files and not cmp.left_only and not cmp.right_only
    one = kaggle(["competitions", "download", CLS, "-f", "test_order_classification.txt", "-p", "one"], env, tmp_path)
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "one" / "test_order_classification.txt").read_bytes() == (
        comp / "test_order_classification.txt"
    ).read_bytes()


def test_download_resumes_with_range(server: FakeKaggle) -> None:
    body = server._competitions[CLS].archive.read_bytes()
    req = urllib.request.Request(f"{server.url}/files/{CLS}.zip", headers={"Range": "bytes=100-"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-{len(body) - 1}/{len(body)}"
        assert resp.read() == body[100:]
    assert server.faults.range_requests == 1


def write_submissions(tmp_path: Path, solution: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A half-wrong classification CSV and a noisy verification CSV, written with the pipeline's writers."""
    from pipeline.submission import write_classification, write_verification

    headers = SubmissionParams()
    cls = pd.read_csv(solution / "classification_solution.csv", dtype=str)
    labels = cls["label"].to_numpy(dtype=object).copy()
    flip = rng.random(len(labels)) < 0.5
    labels[flip] = rng.permutation(labels)[flip]
    write_classification(tmp_path / "classification.csv", cls["id"], labels, headers.classification_header)
    ver = pd.read_csv(solution / "verification_solution.csv", dtype=str)
    scores = ver["label"].astype(float).to_numpy() + rng.normal(0, 0.8, len(ver))
    write_verification(tmp_path / "verification.csv", ver["trial"].tolist(), scores, headers.verification_header)
    return tmp_path / "classification.csv", tmp_path / "verification.csv"


def test_submit_scores_public_and_private_with_the_pipeline_scorer(
    server: FakeKaggle, env: dict, tmp_path: Path, tiny
) -> None:
    _, solution = tiny
    cls_csv, ver_csv = write_submissions(tmp_path, solution, np.random.default_rng(0))
    for slug, csv in ((CLS, cls_csv), (VER, ver_csv)):
        done = kaggle(["competitions", "submit", slug, "-f", str(csv), "-m", f"try {slug}"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert re.search(r"Submission ref: \d+", done.stdout)
    listed = kaggle(["competitions", "submissions", CLS, "-v"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = pd.read_csv(pd.io.common.StringIO(listed.stdout))
    assert row.loc[0, "description"] == f"try {CLS}" and "COMPLETE" in row.loc[0, "status"]
    header = SubmissionParams().classification_header
    mask = server.public_mask("classification")
    assert row.loc[0, "publicScore"] == score_classification(
        cls_csv, solution / "classification_solution.csv", header, mask
    )
    assert row.loc[0, "privateScore"] == score_classification(
        cls_csv, solution / "classification_solution.csv", header, ~mask
    )
    ver = server.submissions[-1]
    vmask = server.public_mask("verification")
    vheader = SubmissionParams().verification_header
    assert ver.public == score_verification(ver_csv, solution / "verification_solution.csv", vheader, vmask)
    assert 0.5 < ver.public < 1.0  # noisy scores: informative but not perfect


def test_bad_submission_is_recorded_as_error(server: FakeKaggle, env: dict, tmp_path: Path) -> None:
    bad = tmp_path / "classification.csv"
    bad.write_text("Id,Category\n1,2\n")
    done = kaggle(["competitions", "submit", CLS, "-f", str(bad), "-m", "bad header"], env, tmp_path)
    assert done.returncode == 0, done.stderr  # Kaggle accepts the upload and fails it while scoring
    sub = server.submissions[-1]
    assert sub.status == "ERROR" and "header is 'Id,Category'" in sub.error and str(tmp_path) not in sub.error


def test_unknown_competition_rules_and_credentials(tiny, tmp_path: Path) -> None:
    with FakeKaggle(*tiny, credentials=("tester", "right-key"), rules_not_accepted=[VER]) as srv:
        env = isolated_env(tmp_path / "home", srv)
        env.update(KAGGLE_USERNAME="tester", KAGGLE_KEY="right-key")
        missing = kaggle(["competitions", "files", "no-such-competition"], env, tmp_path)
        assert missing.returncode == 1 and "not found" in missing.stderr
        forbidden = kaggle(["competitions", "download", VER, "-p", "dl"], env, tmp_path)
        assert forbidden.returncode == 1 and "accept this competition's rules" in forbidden.stderr
        assert not any((tmp_path / "dl").glob("*.zip"))
        env["KAGGLE_KEY"] = "wrong-key"
        wrong = kaggle(["competitions", "files", CLS], env, tmp_path)
        assert wrong.returncode == 1 and "Authentication required" in wrong.stdout


def test_access_token_is_introspected(server: FakeKaggle, tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home", server)
    env["KAGGLE_API_TOKEN"] = "KGAT_0123456789abcdef"
    listing = kaggle(["competitions", "files", CLS], env, tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "test_order_classification.txt" in listing.stdout


def start_cli(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """`python -m pipeline.testing.fake_kaggle ARGS --port 0`: the process, its URL and the log lines so far."""
    env = isolated_env(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "pipeline.testing.fake_kaggle", *args, "--port", "0"]
    # SIGINT at its default in the child: a background job of a shell without job control inherits it ignored
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=restore)
    lines: list[str] = []
    assert proc.stderr is not None
    for _ in range(200):  # bounded: the lines come after rendering (or zipping) a small competition
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("INFO serving ") and " files from " not in line:  # the lifetime line comes last
            break
    url = next((m.group(1) for m in map(re.compile(r"listening on (http://127\.0\.0\.1:\d+)").search, lines) if m), "")
    assert url, "the server never said where it listens:\n" + "".join(lines)
    return proc, url, lines


def client_env(url: str, tmp_path: Path) -> dict:
    env = isolated_env(tmp_path / "client-home")
    env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", http_proxy=url, no_proxy="", KAGGLE_USERNAME="u", KAGGLE_KEY="k")
    return env


def test_documented_command_says_why_it_stops(tmp_path: Path) -> None:
    """At the end of its lifetime the server says so, and how to keep it running, then exits cleanly."""
    proc, _, lines = start_cli(["--render", str(tmp_path / "c"), "--lifetime", "2"], tmp_path)
    try:
        assert lines[-1] == "INFO serving for 2 s, then stopping (--lifetime 0: until Ctrl-C)\n"
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0
    assert (
        "WARNING fake Kaggle stops: its lifetime of 2 s is over; start it with --lifetime 0 to serve until Ctrl-C"
        in rest
    )


def test_lifetime_zero_serves_the_real_client_until_ctrl_c(tmp_path: Path) -> None:
    """`--render DIR --lifetime 0`: serves the real client with no time limit; Ctrl-C stops it with a line."""
    proc, url, lines = start_cli(["--render", str(tmp_path / "c"), "--lifetime", "0"], tmp_path)
    try:
        assert lines[-1] == "INFO serving until Ctrl-C\n"
        listing = kaggle(["competitions", "files", VER, "--page-size", "100"], client_env(url, tmp_path), tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "test_trials_verification_student.txt" in listing.stdout
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0 and "INFO fake Kaggle stops: interrupted (Ctrl-C)" in rest


def test_leaderboard_show_with_the_real_client(server: FakeKaggle, env: dict, tmp_path: Path, tiny) -> None:
    """`kaggle competitions leaderboard SLUG --show`: each team's best public score, best first; errors left out."""
    _, solution = tiny
    empty = kaggle(["competitions", "leaderboard", VER, "--show"], env, tmp_path)
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "No results found" in empty.stdout
    first = write_submissions(tmp_path / "a", solution, np.random.default_rng(0))[1]
    second = write_submissions(tmp_path / "b", solution, np.random.default_rng(1))[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("trial,score\n")
    rival = {**env, "KAGGLE_USERNAME": "rival"}
    for who, csv in ((env, first), (env, second), (rival, bad), (rival, first)):
        done = kaggle(["competitions", "submit", VER, "-f", str(csv), "-m", "x"], who, tmp_path)
        assert done.returncode == 0, done.stderr
    tester_best = max(server.submissions[0].public or 0, server.submissions[1].public or 0)
    rival_best = server.submissions[3].public
    assert server.submissions[2].status == "ERROR" and rival_best is not None
    board = kaggle(["competitions", "leaderboard", VER, "--show", "-v"], env, tmp_path)
    assert board.returncode == 0, board.stdout + board.stderr
    rows = pd.read_csv(pd.io.common.StringIO(board.stdout))
    assert list(rows.columns) == ["teamId", "teamName", "submissionDate", "score"]
    # The rival's best equals the tester's first score: a tie goes to the earlier submission, the tester's.
    assert rows["teamName"].tolist() == ["tester", "rival"] and tester_best >= rival_best
    assert rows["score"].tolist() == [tester_best, rival_best]
    assert kaggle(["competitions", "leaderboard", CLS, "--show"], env, tmp_path).stdout.strip() == "No results found"


def test_a_failed_submission_shows_its_reason_in_the_real_client(server: FakeKaggle, env: dict, tmp_path: Path) -> None:
    """A submission made for another competition (more rows than this one's 40 trials) fails with its reason."""
    header = ",".join(SubmissionParams().verification_header)
    other = tmp_path / "verification.csv"
    other.write_text(header + "\n" + "".join(f"a{i}.jpg b{i}.jpg,0.5\n" for i in range(3000)))
    done = kaggle(["competitions", "submit", VER, "-f", str(other), "-m", "wrong competition"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    ref = server.submissions[-1].ref
    shown = kaggle(["competitions", "submission", str(ref)], env, tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Status:" in shown.stdout and "ERROR" in shown.stdout
    error = next(line for line in shown.stdout.splitlines() if line.startswith("Error:"))
    assert "the file has 3000 rows, expected 40" in error
    assert "40 verification rows; to score the submissions `make repro` wrote, start it with --project ." in error
    assert str(server.solution) not in shown.stdout  # the hidden answers' location is not the client's business
    waited = kaggle(["competitions", "submit", VER, "-f", str(other), "-m", "again", "--wait"], env, tmp_path)
    assert waited.returncode == 1 and "the file has 3000 rows, expected 40" in waited.stdout + waited.stderr


def test_project_serves_what_make_repro_rendered(tiny, tmp_path: Path) -> None:
    """`--project DIR` serves DIR/data/raw and DIR/data/solution with DIR/params.yaml's slugs."""
    comp, solution = tiny
    project = tmp_path / "project"
    shutil.copytree(comp, project / "data" / "raw")
    shutil.copytree(solution, project / "data" / "solution")
    (project / "params.yaml").write_text("kaggle:\n  classification: my-cls\n  verification: my-ver\n")
    proc, url, lines = start_cli(["--project", str(project), "--lifetime", "60"], tmp_path)
    try:
        assert any(
            "serving my-ver (verification): " in line and str(project / "data" / "raw") in line for line in lines
        )
        env = client_env(url, tmp_path)
        _, ver_csv = write_submissions(tmp_path, solution, np.random.default_rng(2))
        done = kaggle(["competitions", "submit", "my-ver", "-f", str(ver_csv), "-m", "repro", "--wait"], env, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Submission scored. Public score: 0." in done.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bare = subprocess.run(
        [sys.executable, "-m", "pipeline.testing.fake_kaggle", "--project", str(tmp_path / "empty")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bare.returncode == 2 and "run `make repro` (or `dvc repro`) first" in bare.stderr


def test_listing_reports_a_json_error_body(server: FakeKaggle) -> None:
    req = urllib.request.Request(
        f"{server.url}/api/v1/competitions.CompetitionApiService/ListDataFiles",
        data=json.dumps({"competitionName": "nope"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer t"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 404
    assert json.loads(err.value.read()) == {"code": 404, "message": "Competition 'nope' not found"}


def test_sigterm_stops_the_server_with_a_line(tmp_path: Path) -> None:
    proc, _, lines = start_cli(["--render", str(tmp_path / "c"), "--lifetime", "0"], tmp_path)
    try:
        assert lines[-1] == "INFO serving until Ctrl-C\n"
        proc.terminate()
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0 and "INFO fake Kaggle stops: terminated (SIGTERM)" in rest
