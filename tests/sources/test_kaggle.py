"""`data.source: kaggle` end to end against the local Kaggle: the real kaggle client downloads, nothing is mocked.

Every failure must leave `dest` as it was (absent, or the previous competition) and say what went wrong once.
"""

from __future__ import annotations

import filecmp
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline.params import KaggleParams
from pipeline.testing.fake_kaggle import FakeKaggle, isolated_env, render_tiny

ROOT = Path(__file__).resolve().parents[2]
CLS, VER = KaggleParams().classification, KaggleParams().verification
KEY = "d0wnload-key-never-shown"

DOWNLOAD = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO)
from pipeline.params import KaggleParams, LayoutParams
from pipeline.sources.kaggle import download_kaggle
try:
    download_kaggle(KaggleParams(classification={cls!r}, verification={ver!r}), LayoutParams(), Path({dest!r}))
except Exception as err:
    print("ERROR", type(err).__name__, err)
    sys.exit(3)
print("DONE")
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return render_tiny(tmp_path_factory.mktemp("tiny"))


def client_env(tmp_path: Path, server: FakeKaggle | None) -> dict:
    env = isolated_env(tmp_path / "home", server)
    env.update(KAGGLE_USERNAME="tester", KAGGLE_KEY=KEY, PYTHONPATH=str(ROOT))
    return env


def download(env: dict, dest: Path, cls: str = CLS, ver: str = VER, wait: bool = True):
    code = DOWNLOAD.format(cls=cls, ver=ver, dest=str(dest))
    args = [sys.executable, "-c", code]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=dest.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = subprocess.run(args, env=env, cwd=dest.parent, capture_output=True, text=True, timeout=180)
    assert KEY not in done.stdout + done.stderr
    return done


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def old_competition(dest: Path) -> Path:
    """A previous download at `dest`, which every failed run must leave untouched."""
    (dest / "train_data").mkdir(parents=True)
    (dest / "marker.txt").write_text("previous download")
    return dest


def assert_untouched(dest: Path) -> None:
    assert (dest / "marker.txt").read_text() == "previous download"
    assert sorted(p.name for p in dest.iterdir()) == ["marker.txt", "train_data"]


def test_two_competitions_under_a_top_folder_replace_the_old_download(tiny, tmp_path: Path) -> None:
    comp, _ = tiny
    dest = old_competition(tmp_path / "data" / "raw")
    with FakeKaggle(*tiny, top_folder="11-785hw2p2-s20") as srv:
        done = download(client_env(tmp_path, srv), dest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert same_tree(dest, comp)  # exactly the layout: the marker of the old download is gone
    assert srv.faults.downloads == 2
    assert sorted(p.name for p in dest.parent.iterdir()) == ["raw"]  # no work folder left behind


def test_one_competition_for_both_tasks_downloads_once(tiny, tmp_path: Path) -> None:
    comp, _ = tiny
    params = KaggleParams(classification="hw2p2-s20", verification="hw2p2-s20")
    with FakeKaggle(*tiny, kaggle=params) as srv:
        done = download(client_env(tmp_path, srv), tmp_path / "raw", "hw2p2-s20", "hw2p2-s20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert srv.faults.downloads == 1
    assert same_tree(tmp_path / "raw", comp)


def test_layout_inside_an_inner_archive(tiny, tmp_path: Path) -> None:
    comp, _ = tiny
    params = KaggleParams(classification="hw2p2", verification="hw2p2")
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for p in sorted(comp.rglob("*")):
            if p.is_file():
                zf.write(p, f"hw2p2_data/{p.relative_to(comp)}")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("hw2p2_data.zip", inner.getvalue())
        zf.writestr("sample_submission.csv", "id,label\n")
    with FakeKaggle(*tiny, kaggle=params) as srv:
        srv.faults.replace_archive["hw2p2"] = outer
        done = download(client_env(tmp_path, srv), tmp_path / "raw", "hw2p2", "hw2p2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert same_tree(tmp_path / "raw", comp)


def zip_slip(path: Path, comp: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(comp / "test_order_classification.txt", "test_order_classification.txt")
        zf.writestr("../../escaped.txt", "pwned")
    return path


def test_zip_slip_archive_is_refused(tiny, tmp_path: Path) -> None:
    comp, _ = tiny
    dest = old_competition(tmp_path / "data" / "raw")
    with FakeKaggle(*tiny) as srv:
        srv.faults.replace_archive[CLS] = zip_slip(tmp_path / "slip.zip", comp)
        done = download(client_env(tmp_path, srv), dest)
    assert done.returncode == 3
    assert "ERROR ArchiveError" in done.stdout and "'../../escaped.txt': '..' in path" in done.stdout
    assert not list(tmp_path.rglob("escaped.txt"))
    assert_untouched(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["raw"]  # the hostile archive is not kept


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("rules", "KaggleError Kaggle refused to download the data for competition '"),
        ("unknown", "KaggleError Kaggle has no competition 'no-such-competition' (404 Not Found)"),
        ("network", "KaggleError network failure while trying to list the data files"),
        (
            "disk",
            "DiskSpaceError downloading and extracting the competition files (20000000.00 GB listed) "
            "needs 42000000.00 GB",
        ),
        ("incomplete", "LayoutError the downloaded competitions"),
    ],
)
def test_failures_leave_the_old_download(tiny, tmp_path: Path, case: str, expect: str) -> None:
    comp, _ = tiny
    dest = old_competition(tmp_path / "data" / "raw")
    with FakeKaggle(*tiny, rules_not_accepted=[VER] if case == "rules" else ()) as srv:
        env = client_env(tmp_path, srv)
        ver = "no-such-competition" if case == "unknown" else VER
        if case == "network":
            srv.stop()  # nothing listens there any more
        if case == "disk":
            srv.faults.advertised_bytes = 10**16
        if case == "incomplete":  # the verification half is missing its trial files
            half = tmp_path / "half.zip"
            with zipfile.ZipFile(half, "w") as zf:
                for p in sorted((comp / "test_verification").iterdir()):
                    zf.write(p, f"test_verification/{p.name}")
            srv.faults.replace_archive[VER] = half
        done = download(env, dest, ver=ver)
    assert done.returncode == 3, done.stdout + done.stderr
    assert expect in done.stdout
    if case == "disk":
        assert srv.faults.downloads == 0  # failed before fetching a byte
    if case == "incomplete":
        assert "validation_verification, validation_trials_verification.txt" in done.stdout
    assert_untouched(dest)


def test_no_credentials_names_every_place(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    (tmp_path / "data").mkdir()
    done = download(env, tmp_path / "data" / "raw")
    assert done.returncode == 3
    for place in ("KAGGLE_API_TOKEN", "access_token", "kaggle.json", "KAGGLE_USERNAME and KAGGLE_KEY"):
        assert place in done.stdout
    assert not (tmp_path / "data" / "raw").exists()


def test_interrupted_download_leaves_nothing_half_written_and_resumes(tiny, tmp_path: Path) -> None:
    comp, _ = tiny
    dest = old_competition(tmp_path / "data" / "raw")
    with FakeKaggle(*tiny) as srv:
        env = client_env(tmp_path, srv)
        srv.faults.stall_after = 1000
        proc = download(env, dest, wait=False)
        archives = dest.parent / ".download-raw" / "archives"
        try:
            assert srv.faults.stalled.wait(120), "the download never started"
            for _ in range(600):  # bounded: the client opens its output file just after the first bytes arrive
                if list(archives.rglob("*.zip")):
                    break
                time.sleep(0.1)
        finally:
            proc.kill()  # a hard interrupt: no cleanup code runs
            proc.communicate(timeout=60)
        assert_untouched(dest)
        partial = list(archives.rglob("*.zip"))
        assert partial and all(p.stat().st_size < srv._competitions[CLS].archive.stat().st_size for p in partial)
        srv.faults.stall_after = None
        srv.faults.release.set()
        again = download(env, dest)
    assert again.returncode == 0, again.stdout + again.stderr
    assert same_tree(dest, comp)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["raw"]


def test_the_download_stage_reports_one_line(tiny, tmp_path: Path) -> None:
    """Through the stage entry point the lead's dvc.yaml runs: a 403 is one error line and exit status 1."""
    params = {"data": {"source": "kaggle"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with FakeKaggle(*tiny, rules_not_accepted=[CLS]) as srv:
        env = client_env(tmp_path, srv)
        cmd = [sys.executable, "-m", "pipeline.stages.download", "--out", "data/raw", "--solution", "data/solution"]
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert "403 Forbidden" in errors[0] and f"https://www.kaggle.com/competitions/{CLS}/rules" in errors[0]
    assert "Traceback" not in done.stderr and KEY not in done.stdout + done.stderr
    assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "data" / "solution").exists()
