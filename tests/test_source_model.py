"""The source model (issue #15 point 4): rendering of the source set, the params it trains under, the params check,
and the real `source` stage under `dvc repro`: the fold models start from its backbone, and an experiment on the
fold models' own keys reuses the cached source model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.face_model import load_model
from pipeline.params import Params, ParamsError, SourceParams, parse_params
from pipeline.source_model import render_source_set, source_params
from pipeline.stages.common import TRACE_ENV
from tests.conftest import TINY_PARAMS, make_project, merge, run


def test_render_source_set_is_labelled_identity_by_identity_and_the_same_for_any_workers():
    s = SourceParams(identities=3, images_per_identity=2, seed=5)
    images, labels = render_source_set(s, 24)
    assert images.shape == (6, 24, 24, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    parallel, _ = render_source_set(s, 24, workers=2)
    assert np.array_equal(images, parallel)
    other, _ = render_source_set(s.model_copy(update={"seed": 6}), 24)
    assert not np.array_equal(images, other)
    # two faces of one identity are closer than faces of two identities, on average over a few more
    many, who = render_source_set(SourceParams(identities=12, images_per_identity=4), 24)
    flat = many.reshape(len(many), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    sim = flat @ flat.T
    same = (who[:, None] == who[None, :]) & ~np.eye(len(who), dtype=bool)
    assert sim[same].mean() > sim[who[:, None] != who[None, :]].mean()


def test_source_params_read_only_the_source_section_and_the_network():
    p = Params(source=SourceParams(identities=10, steps=77, lr=0.01, batch_size=16, seed=3, image_size=40))
    sp = source_params(p)
    assert (sp.train.steps, sp.train.epochs, sp.train.lr, sp.train.batch_size, sp.seed) == (77, "auto", 0.01, 16, 3)
    assert sp.model == p.model and sp.data.image_size == 40
    # what the fold models vary between experiments, the input size included, does not change the source model
    other = p.model_copy(
        update={
            "seed": 9,
            "data": p.data.model_copy(update={"image_size": 64, "source": "local"}),
            "train": p.train.model_copy(update={"lr": 0.1, "steps": 5}),
            "loss": p.loss.model_copy(update={"center_weight": 0.5}),
        }
    )
    assert source_params(other) == sp
    wider = p.model_copy(update={"model": p.model.model_copy(update={"width": 1.0})})
    assert source_params(wider).model.width == 1.0


def test_a_source_model_and_other_starting_weights_are_refused_naming_both():
    with pytest.raises(ParamsError, match=r"source.identities \(5\) and model.pretrained_path"):
        parse_params({"source": {"identities": 5}, "model": {"pretrained_path": "w.pt"}})
    parse_params({"source": {"identities": 0}, "model": {"pretrained_path": "w.pt"}})


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


# rendered at another size than the fold models train at: they load its convolutions whatever their input size
SOURCE_ON = {"source": {"identities": 8, "images_per_identity": 4, "steps": 6, "batch_size": 16, "image_size": 40}}
ONE_FOLD = {"folds": {"train": [0]}, "train": {"epochs": 2}, "finetune": {"epochs": 0}}  # the source is what counts


def changed(project: Path) -> set[str]:
    """The stages `dvc status` says a `dvc repro` would run (before the ones downstream of them)."""
    return set(json.loads(run(["dvc", "status", "--json"], project).stdout))


@pytest.mark.slow
def test_fold_models_start_from_the_cached_source_model(tmp_path: Path):
    project = make_project(tmp_path / "project", merge(merge(TINY_PARAMS, SOURCE_ON), ONE_FOLD))
    first = run(["dvc", "repro"], project, env={TRACE_ENV: str(tmp_path / "read")})
    read = json.loads(next((tmp_path / "read").glob("pipeline.stages.source.*")).read_text())
    assert read and all(k.split(".")[0] in ("source", "model") for k in read), read
    log = first.stdout + first.stderr
    backbone = project / "models/source/backbone.pt"
    summary = json.loads((project / "models/source/source.json").read_text())
    assert backbone.exists() and summary["identities"] == 8 and summary["steps"] >= 6 and summary["image_size"] == 40
    assert not (project / "models/source/checkpoint.pt").exists()  # the committed folder holds no resume state
    assert "loaded" in log and "from models/source/backbone.pt" in log  # the fold started from it
    model, _ = load_model(project / "models/fold0/model.pt", torch.device("cpu"))
    start = torch.load(backbone, weights_only=True)
    assert set(start) <= set(model.net.backbone.state_dict())  # the same network, tensor for tensor

    # an experiment on the fold models' own keys reuses the source model: only the fold (and after) would re-run
    params = yaml.safe_load((project / "params.yaml").read_text())
    lr = params["train"]["lr"]
    params["train"]["lr"] = lr / 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert changed(project) == {"train@0"}
    # and so does one on the input size: the source model has its own (source.image_size)
    size = params["data"]["image_size"]
    params["train"]["lr"], params["data"]["image_size"] = lr, size - 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = changed(project)
    assert stale and "source" not in stale, stale
    params["data"]["image_size"] = size

    # switched off: the stage leaves no backbone behind, and the fold model, whose input that was, must retrain
    params["train"]["lr"] = lr
    params["source"]["identities"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert changed(project) == {"source"}
    off = run(["dvc", "repro", "source"], project)
    assert ran(off.stdout) == {"source"} and not backbone.exists()
    assert json.loads((project / "models/source/source.json").read_text())["identities"] == 0
    assert changed(project) == {"train@0"}  # its dependency models/source changed
    # a fold model is whole in its file: the one that started from the (now removed) source model still loads
    load_model(project / "models/fold0/model.pt", torch.device("cpu"))
