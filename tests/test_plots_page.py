"""The page `dvc plots show` writes draws everything offline: checked in a real headless Chromium (Debian's
`chromium`, driven by Playwright) with every request that is not a local file aborted and reported.

Chromium is installed by `make browser`, which `make test` and `.ci/run` run first; where it is missing these tests
fail and say why (they never skip).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.plots_page import build
from pipeline.plots_page.browser import inspect_page
from pipeline.testing.fake_kaggle import FakeKaggle, isolated_env
from tests.conftest import ROOT, run


def test_template_is_page_html_with_the_libraries_inlined():
    template = build.TEMPLATE.read_text(encoding="utf-8")
    bundles = build.inlined(template)
    assert list(bundles) == [f"{name}@{version}" for name, version, _ in build.LIBRARIES]
    rebuilt = build.render(
        build.PAGE.read_text(encoding="utf-8"), [build.script_block(k, v) for k, v in bundles.items()]
    )
    assert rebuilt == template, "page.html changed: run python -m pipeline.plots_page.build"
    assert "{plot_divs}" in template and "{scripts}" not in template  # DVC adds no CDN script tags
    assert not re.search(r"<script[^>]+src=", template)


def test_libraries_are_the_versions_dvc_loads_from_its_cdn():
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS))
    assert cdn == {name: version for name, version, _ in build.LIBRARIES}, (
        "run python -m pipeline.plots_page.build --npm"
    )
    for name, _, _ in build.LIBRARIES:
        assert "Copyright" in (build.LICENSES / f"{name}.LICENSE").read_text()


def test_dvc_is_configured_to_use_the_template():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        configured = repo.config["plots"]["html_template"]
        assert (Path(repo.dvc_dir) / configured).resolve() == build.TEMPLATE


def small_page(folder: Path, template: str | None) -> Path:
    """A page as `dvc plots show` writes it (dvc_render's own renderers): one line chart and one image."""
    from dvc_render import render_html
    from dvc_render.image import ImageRenderer
    from dvc_render.vega import VegaRenderer

    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "face.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(png)
    chart = VegaRenderer(
        [{"step": i, "loss": 1.0 / (i + 1), "rev": "workspace"} for i in range(10)],
        "dvclive/plots/metrics/loss.tsv",
        template="linear",
        x="step",
        y="loss",
    )
    image = ImageRenderer([{"rev": "workspace", "src": str(png.resolve())}], "plots/face.png")
    render_html([chart, image], folder / "index.html", template)
    return folder / "index.html"


def test_the_template_draws_offline(tmp_path):
    report = inspect_page(small_page(tmp_path, str(build.TEMPLATE)))
    assert report.problems(allow_no_data=False) == []
    assert [c["drawn"] for c in report.charts] == [True] and [i["width"] for i in report.images] == [8]


def test_the_check_sees_what_dvcs_own_page_cannot_do_offline(tmp_path):
    report = inspect_page(small_page(tmp_path, None))  # DVC's default page: the chart libraries come from a CDN
    problems = "\n".join(report.problems())
    assert "network request" in problems and "cdn.jsdelivr.net" in problems
    assert "chart dvclive_plots_metrics_loss_tsv never started drawing" in problems
    assert report.images[0]["width"] == 8  # its image shows: what a user without a network saw


def submit_twice_and_fetch_the_leaderboard(project: Path, home: Path) -> None:
    """Two submissions to the local Kaggle (the second with a better local figure), then `leaderboard`."""
    with FakeKaggle(project / "data/raw", project / "data/solution", public_fraction=0.5) as server:
        env = {**isolated_env(home, server), "KAGGLE_USERNAME": "tester", "KAGGLE_KEY": "local"}
        run([sys.executable, "-m", "pipeline", "submit", "-m", "first"], project, env=env)
        metrics = project / "metrics/ensemble.json"
        metrics.write_text(metrics.read_text().replace('"val_auc": 0.', '"val_auc": 0.0'))  # a worse local AUC
        run(
            [sys.executable, "-m", "pipeline", "submit", "submissions/verification.csv", "-m", "second"],
            project,
            env=env,
        )
        run([sys.executable, "-m", "pipeline", "leaderboard"], project, env=env)


@pytest.mark.slow
def test_dvc_plots_show_page_holds_every_plot_and_draws_it_offline(tiny_repro: Path, tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(tiny_repro, project, symlinks=True)
    submit_twice_and_fetch_the_leaderboard(project, tmp_path / "home")
    history = pd.read_csv(project / "submissions/leaderboard.csv")
    assert history["task"].tolist() == ["classification", "verification", "verification"]
    assert history["local"].notna().all() and history["public"].notna().all()

    run(["dvc", "plots", "show"], project)  # .dvc/config: plots.html_template, the offline page
    report = inspect_page(project / "dvc_plots/index.html")
    assert report.problems(allow_no_data=False) == []

    charts = {c["id"] for c in report.charts}
    assert {
        "submissions_leaderboard_csv",  # the submission history
        "plots_analysis_identity_accuracy_csv",
        "plots_roc_csv",
        "dvclive_fold0_plots_metrics_train_loss_tsv",  # the training curves
        "dvclive_fold1_plots_metrics_val_auc_tsv",
    } <= charts
    failures = pd.read_csv(project / "plots/analysis/failures.csv")
    pairs_wanted = yaml.safe_load((project / "params.yaml").read_text())["analysis"]["gallery_pairs"]
    for kind in ("false_accepts", "false_rejects"):
        expected = (failures["kind"] == kind).sum()
        assert expected == pairs_wanted  # the tiny run has more errors than that of each kind
        assert len(report.images_in(f"plots/analysis/{kind}")) == expected, kind
    pairs = pd.read_csv(project / "plots/analysis/confused_pairs.csv")
    assert len(report.images_in("plots/analysis/confused_pairs")) == len(pairs) > 0
    assert report.images_in("plots/roc.png") and report.images_in("plots/augment_preview.png")


def test_a_missing_browser_fails_with_the_reason(tmp_path, monkeypatch):
    from pipeline.plots_page import browser

    log = tmp_path / "browser.log"
    log.write_text("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\n")
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(browser, "INSTALL_LOG", log)
    with pytest.raises(browser.BrowserMissing) as err:
        inspect_page(tmp_path / "index.html")
    assert "make browser" in str(err.value) and "Permission denied" in str(err.value)
