"""`python -m pipeline submit` and `leaderboard` against the local Kaggle, with the real kaggle client.

The fast tests build a project folder by hand (competition, submission CSVs written by the pipeline's writers,
local metrics); the slow one runs the whole thing: download -> `dvc repro` -> submit -> leaderboard.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.params import KaggleParams, SubmissionParams, SyntheticParams
from pipeline.submission import write_classification, write_verification
from pipeline.testing.fake_kaggle import FakeKaggle, isolated_env, render_tiny

ROOT = Path(__file__).resolve().parents[2]
KAGGLE = str(Path(sys.executable).with_name("kaggle"))
CLS, VER = KaggleParams().classification, KaggleParams().verification
KEY = "subm1t-key-never-stored"
METRICS = {"val_accuracy": 0.625, "val_auc": 0.8125, "val_eer": 0.25, "val_tar_at_far": 0.1, "folds": [1, 2]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return render_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def project(tiny, tmp_path: Path) -> Path:
    """A project folder as `dvc repro` leaves it: params, the competition, both CSVs and local metrics."""
    comp, solution = tiny
    proj = tmp_path / "project"
    (proj / "metrics").mkdir(parents=True)
    (proj / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "kaggle"}}))
    shutil.copytree(comp, proj / "data" / "raw")
    shutil.copytree(solution, proj / "data" / "solution")
    (proj / "metrics" / "ensemble.json").write_text(json.dumps(METRICS))
    rng = np.random.default_rng(1)
    headers = SubmissionParams()
    cls = pd.read_csv(solution / "classification_solution.csv", dtype=str)
    labels = cls["label"].to_numpy(dtype=object).copy()
    wrong = rng.random(len(labels)) < 0.4
    labels[wrong] = rng.permutation(labels)[wrong]
    write_classification(proj / "submissions" / "classification.csv", cls["id"], labels, headers.classification_header)
    ver = pd.read_csv(solution / "verification_solution.csv", dtype=str)
    scores = ver["label"].astype(float).to_numpy() + rng.normal(0, 0.7, len(ver))
    write_verification(proj / "submissions" / "verification.csv", ver["trial"], scores, headers.verification_header)
    return proj


def env_for(tmp_path: Path, server: FakeKaggle | None, credentials: bool = True) -> dict:
    env = isolated_env(tmp_path / "home", server)
    env["PYTHONPATH"] = str(ROOT)
    if credentials:
        env.update(KAGGLE_USERNAME="tester", KAGGLE_KEY=KEY)
    return env


def pipeline_cmd(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert KEY not in done.stdout + done.stderr
    return done


def history(proj: Path) -> list[dict[str, str]]:
    with open(proj / "submissions" / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_submit_both_records_provenance_and_leaderboard_joins(project: Path, tiny, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "params.yaml"], cwd=project, check=True)
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "commit", "-qm", "p"], cwd=project, check=True, env={**os.environ, **git})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    # public_fraction=1: the public score is computed on every row, exactly what `pipeline score` computes.
    with FakeKaggle(*tiny, public_fraction=1.0) as srv:
        env = env_for(tmp_path, srv)
        done = pipeline_cmd(["submit", "-m", "first try"], env, project)
        assert done.returncode == 0, done.stderr
        rows = history(project)
        assert [r["task"] for r in rows] == ["classification", "verification"]
        assert [int(r["kaggle_ref"]) for r in rows] == [s.ref for s in srv.submissions]
        for row, name in zip(rows, ("classification.csv", "verification.csv"), strict=True):
            data = (project / "submissions" / name).read_bytes()
            assert row["sha256"] == hashlib.sha256(data).hexdigest()
            assert row["message"] == "first try" and row["git_commit"] == head
            assert row["params_sha256"] == hashlib.sha256((project / "params.yaml").read_bytes()).hexdigest()
            assert float(row["val_auc"]) == METRICS["val_auc"] and float(row["val_eer"]) == METRICS["val_eer"]
            assert "folds" not in row and row["time"].endswith("Z")
        assert [r["competition"] for r in rows] == [CLS, VER]

        # A submission made by hand appears too, without local metrics.
        by_hand = subprocess.run(
            [KAGGLE, "competitions", "submit", CLS, "-f", "submissions/classification.csv", "-m", "by hand"],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert by_hand.returncode == 0, by_hand.stderr
        board = pipeline_cmd(["leaderboard"], env, project)
        assert board.returncode == 0, board.stderr
        scored = {s.ref: s for s in srv.submissions}

    lines = {line.split()[3]: line for line in board.stdout.splitlines() if line[:4].isdigit()}
    assert set(lines) == {str(r) for r in scored}
    for row in rows:
        sub = scored[int(row["kaggle_ref"])]
        local = METRICS["val_accuracy"] if row["task"] == "classification" else METRICS["val_auc"]
        cells = lines[row["kaggle_ref"]].split()
        assert cells[2] == row["task"] and cells[4] == "COMPLETE"
        assert cells[5:8] == [f"{local:.5f}", f"{sub.public:.5f}", "-"]  # no private rows on this board
        score = pipeline_cmd(["score", f"submissions/{row['task']}.csv"], env, project)
        assert score.returncode == 0, score.stderr
        key = "accuracy" if row["task"] == "classification" else "auc"
        assert json.loads(score.stdout)[key] == sub.public  # the server scored with exactly `pipeline score`
    hand = lines[str(srv.submissions[-1].ref)].split()
    assert hand[5] == "-" and "by" in hand  # no local metric for a submission history.csv does not know
    png = (project / "submissions" / "leaderboard.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # The plot data of the submission history (dvc.yaml's top-level plot): oldest first, local and public side by side.
    board_csv = pd.read_csv(project / "submissions" / "leaderboard.csv", dtype={"ref": str})
    assert board_csv["ref"].tolist() == [r["kaggle_ref"] for r in rows] + [str(srv.submissions[-1].ref)]
    assert board_csv["time"].tolist()[:2] == [r["time"] for r in rows] and board_csv["time"].is_monotonic_increasing
    assert board_csv["local_metric"].tolist() == ["val_accuracy", "val_auc", "val_accuracy"]
    assert board_csv["local"].tolist()[:2] == [METRICS["val_accuracy"], METRICS["val_auc"]]
    assert np.isnan(board_csv["local"].iloc[2])  # by hand: no local figure
    assert board_csv["public"].tolist() == [scored[int(r)].public for r in board_csv["ref"]]
    assert KEY not in (project / "submissions" / "history.csv").read_text()


def test_invalid_file_uploads_nothing(project: Path, tiny, tmp_path: Path) -> None:
    path = project / "submissions" / "verification.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # one row short
    with FakeKaggle(*tiny) as srv:
        done = pipeline_cmd(["submit"], env_for(tmp_path, srv), project)
    assert done.returncode == 1
    assert "verification.csv" in done.stderr and "nothing was submitted" in done.stderr
    assert srv.submissions == [] and not (project / "submissions" / "history.csv").exists()


def test_no_credentials_names_every_place_and_writes_nothing(project: Path, tiny, tmp_path: Path) -> None:
    with FakeKaggle(*tiny) as srv:
        env = env_for(tmp_path, srv, credentials=False)
        done = pipeline_cmd(["submit", "--task", "classification"], env, project)
        board = pipeline_cmd(["leaderboard"], env, project)
    assert done.returncode == 1 and board.returncode == 1
    for text in (done.stderr, board.stderr):
        for place in ("KAGGLE_API_TOKEN", "access_token", "kaggle.json", "KAGGLE_USERNAME and KAGGLE_KEY"):
            assert place in text
    assert srv.submissions == [] and not (project / "submissions" / "history.csv").exists()
    validate = pipeline_cmd(["validate", "submissions/classification.csv"], env, project)
    assert validate.returncode == 0, validate.stderr  # everything else works without credentials


def test_forbidden_verification_keeps_the_classification_record(project: Path, tiny, tmp_path: Path) -> None:
    with FakeKaggle(*tiny, rules_not_accepted=[VER]) as srv:
        env = env_for(tmp_path, srv)
        done = pipeline_cmd(["submit"], env, project)
        board = pipeline_cmd(["leaderboard", "--task", "verification"], env, project)
    assert done.returncode == 1
    assert f"https://www.kaggle.com/competitions/{VER}/rules" in done.stderr
    assert [r["task"] for r in history(project)] == ["classification"]
    assert len(srv.submissions) == 1
    assert board.returncode == 1 and "403 Forbidden" in board.stderr


def test_unknown_competition_on_the_leaderboard(project: Path, tiny, tmp_path: Path) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump({"kaggle": {"verification": "typo-slug"}}))
    with FakeKaggle(*tiny) as srv:
        board = pipeline_cmd(["leaderboard"], env_for(tmp_path, srv), project)
    assert board.returncode == 1 and "Kaggle has no competition 'typo-slug' (404 Not Found)" in board.stderr
    assert not (project / "submissions" / "leaderboard.png").exists()


def commit_all(proj: Path, message: str) -> str:
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    if not (proj / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=proj, check=True, env={**os.environ, **git})
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True, text=True).stdout.strip()


def test_submit_takes_files_as_arguments_and_says_each_success_once(project: Path, tiny, tmp_path: Path) -> None:
    (project / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"ensemble": {"cmd": "true", "metrics": ["metrics/ensemble.json"]}}})
    )
    head = commit_all(project, "code and outputs")
    with FakeKaggle(*tiny) as srv:
        env = env_for(tmp_path, srv)
        one = pipeline_cmd(["submit", "submissions/verification.csv", "-m", "just one"], env, project)
        assert one.returncode == 0, one.stderr
        assert [s.competition for s in srv.submissions] == [VER]
        ref = str(srv.submissions[0].ref)
        said = one.stdout + one.stderr
        assert said.count(ref) == 1 and said.count("submitted ") == 1  # one line per upload, not two
        assert f"submitted submissions/verification.csv to {VER}: ref {ref}, local val_auc 0.8125" in one.stdout
        assert [(r["task"], r["message"], r["git_commit"]) for r in history(project)] == [
            ("verification", "just one", head)
        ]

        # history.csv committed, then rewritten by the next submit, with DVC's metrics rewritten too: not dirty.
        head = commit_all(project, "record")
        (project / "metrics" / "ensemble.json").write_text(json.dumps(METRICS | {"val_auc": 0.5}))
        both = pipeline_cmd(["submit", "submissions/classification.csv", "submissions/verification.csv"], env, project)
        assert both.returncode == 0, both.stderr
        assert [s.competition for s in srv.submissions[1:]] == [CLS, VER]
        assert [r["git_commit"] for r in history(project)[1:]] == [head, head]
        (project / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "kaggle"}, "seed": 1}))
        dirty = pipeline_cmd(["submit", "--task", "classification"], env, project)
        assert dirty.returncode == 0, dirty.stderr
        assert (
            history(project)[-1]["git_commit"] == head + "-dirty" and history(project)[-1]["task"] == "classification"
        )

        twice = pipeline_cmd(["submit", "submissions/verification.csv", "submissions/verification.csv"], env, project)
        wrong = pipeline_cmd(["submit", "--task", "classification", "submissions/verification.csv"], env, project)
        missing = pipeline_cmd(["submit", "submissions/nope.csv"], env, project)
    assert twice.returncode == 1 and "are both verification submissions" in twice.stderr
    assert wrong.returncode == 1 and "header" in wrong.stderr
    assert missing.returncode == 1 and "submissions/nope.csv: submission file not found" in missing.stderr
    for done in (twice, wrong, missing):
        assert "nothing was submitted" in done.stderr
    assert len(srv.submissions) == 4


def test_a_submission_kaggle_fails_to_score_says_why(project: Path, tmp_path: Path) -> None:
    """The project's files are valid locally, but this Kaggle serves another competition: the reason is shown."""
    other = render_tiny(tmp_path / "other", seed=7)
    with FakeKaggle(*other) as srv:
        done = pipeline_cmd(["submit", "submissions/verification.csv"], env_for(tmp_path, srv), project)
    assert srv.submissions[0].status == "ERROR"
    assert done.returncode == 1
    assert f"Kaggle failed to score submission {srv.submissions[0].ref}" in done.stderr
    assert "is not in the solution" in done.stderr
    assert [r["task"] for r in history(project)] == ["verification"]  # uploaded, so recorded


def test_history_widens_columns_and_survives_concurrent_submits(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.history import FIELDS, HistoryError, append_row, local_metrics, read_history

    path = tmp_path / "submissions" / "history.csv"
    append_row({"task": "classification", "competition": "c", "kaggle_ref": 1, "val_auc": 0.5}, path)
    append_row({"task": "verification", "competition": "v", "kaggle_ref": 2, "new_metric": 0.25}, path)
    rows = read_history(path)
    assert list(rows[0]) == [*FIELDS, "new_metric", "val_auc"]
    assert (rows[0]["val_auc"], rows[0]["new_metric"], rows[1]["new_metric"]) == ("0.5", "", "0.25")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: append_row({"task": "t", "competition": "c", "kaggle_ref": i}, path), range(3, 43)))
    assert sorted(int(r["kaggle_ref"]) for r in read_history(path)) == list(range(1, 43))
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.csv"]  # no lock or temporary files left
    path.write_text(path.read_text() + "x,y\n")
    with pytest.raises(HistoryError, match=r"history.csv:44: expected"):
        read_history(path)
    (tmp_path / "m.json").write_text(json.dumps(METRICS | {"flag": True, "nan": float("nan")}))
    assert local_metrics(tmp_path / "m.json") == {k: v for k, v in METRICS.items() if k != "folds"}
    assert local_metrics(tmp_path / "absent.json") == {}


@pytest.mark.slow
def test_download_repro_submit_leaderboard(tmp_path: Path) -> None:
    """The whole loop on tiny params: Kaggle download -> dvc repro -> submit both -> leaderboard == pipeline score."""
    from tests.conftest import TINY_PARAMS, git_env, make_project, merge

    comp, solution = tmp_path / "kaggle" / "competition", tmp_path / "kaggle" / "solution"
    from pipeline.params import LayoutParams
    from pipeline.sources.synthetic import render_competition

    render_competition(comp, solution, SyntheticParams(**TINY_PARAMS["synthetic"]), LayoutParams(), seed=3)
    # one short fold: the loop through Kaggle is under test, not what the model learns
    short = {"folds": {"train": [0]}, "train": {"epochs": 2}, "finetune": {"epochs": 0}, "data": {"source": "kaggle"}}
    project = make_project(tmp_path / "project", merge(TINY_PARAMS, short))
    with FakeKaggle(comp, solution, top_folder="11-785hw2p2-s20", public_fraction=1.0) as srv:
        env = {**git_env(), **env_for(tmp_path, srv)}
        env["PATH"] = git_env()["PATH"]
        repro = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
        assert repro.returncode == 0, repro.stdout[-4000:] + repro.stderr[-4000:]
        assert KEY not in repro.stdout + repro.stderr
        assert srv.faults.downloads == 2
        submit = pipeline_cmd(["submit", "-m", "e2e"], env, project)
        assert submit.returncode == 0, submit.stderr
        board = pipeline_cmd(["leaderboard"], env, project)
        assert board.returncode == 0, board.stderr
    for name in ("dvc.lock", "submissions/history.csv"):
        assert KEY not in (project / name).read_text()
    rows = {r["task"]: r for r in history(project)}
    for task, key in (("classification", "accuracy"), ("verification", "auc")):
        sub = next(s for s in srv.submissions if s.ref == int(rows[task]["kaggle_ref"]))
        assert sub.status == "COMPLETE", sub.error
        score = pipeline_cmd(["score", f"submissions/{task}.csv", "--solution", str(solution)], env, project)
        assert score.returncode == 0, score.stderr
        assert json.loads(score.stdout)[key] == sub.public
        line = next(line for line in board.stdout.splitlines() if f" {sub.ref} " in line)
        assert f"{sub.public:.5f}" in line.split()


def test_leaderboard_csv_of_one_task_keeps_the_other_tasks_rows(tmp_path: Path) -> None:
    from pipeline.commands.leaderboard import write_csv

    out = tmp_path / "leaderboard.csv"
    row = {"time": "2026-01-02T00:00:00Z", "task": "classification", "ref": 1, "local": 0.5, "public": 0.6}
    write_csv([row], ("classification", "verification"), out)
    later = {**row, "time": "2026-01-03T00:00:00Z", "task": "verification", "ref": 2, "private": None}
    write_csv([later], ("verification",), out)
    again = {**later, "ref": 3, "time": "2026-01-01T00:00:00Z"}
    write_csv([again], ("verification",), out)  # the verification rows are Kaggle's list now: ref 2 is not in it
    table = pd.read_csv(out)
    assert table["ref"].tolist() == [3, 1] and table["task"].tolist() == ["verification", "classification"]
    assert table["local_metric"].tolist() == ["val_auc", "val_accuracy"] and table["private"].isna().all()
