"""Atomic outputs: a failure (or a kill) while writing never leaves a half file under the final name."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.io import DiskSpaceError, atomic_dir, atomic_path, check_free_space, write_json


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "submission.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_failed_folder_keeps_the_old_folder(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "train.csv").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "train.csv").write_text("new")
        raise RuntimeError("killed")
    assert (target / "train.csv").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "train.csv").write_text("new")
    assert (target / "train.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_sigkill_while_writing_leaves_no_partial_target(tmp_path):
    target = tmp_path / "big.json"
    code = (
        "import sys, time\n"
        "from pipeline.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    with open(tmp, 'w') as f:\n"
        "        f.write('x' * 1000); f.flush()\n"
        "        print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.1)
    assert not target.exists()


def test_write_json_round_trip(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'


def test_free_space_is_checked_with_the_figure(tmp_path):
    check_free_space(tmp_path / "not" / "yet", 1, "a tiny file")
    with pytest.raises(DiskSpaceError, match=r"the decoded cache needs 1000000000.00 GB at .* GB are free"):
        check_free_space(tmp_path / "cache", 10**18, "the decoded cache")
