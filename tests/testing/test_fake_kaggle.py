"""The local Kaggle, driven by the real `kaggle` executable (kaggle 2.x): listing, download, submit, scores."""

from __future__ import annotations

import filecmp
import json
import re
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


def test_documented_command_serves_until_its_lifetime(tmp_path: Path) -> None:
    """`python -m pipeline.testing.fake_kaggle --render DIR --port 0` starts, serves the client, and stops."""
    env = isolated_env(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "pipeline.testing.fake_kaggle", "--render", str(tmp_path / "c"), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--lifetime", "60"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = None
        for _ in range(200):  # bounded: the log line comes after rendering a tiny competition
            line = proc.stderr.readline()
            if not line:
                break
            if found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
                url = found.group(1)
                break
        assert url, "the server never said where it listens"
        env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", http_proxy=url, no_proxy="", KAGGLE_USERNAME="u", KAGGLE_KEY="k")
        listing = kaggle(["competitions", "files", VER, "--page-size", "100"], env, tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "test_trials_verification_student.txt" in listing.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
