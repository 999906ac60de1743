"""Several processes on PyTorch's distributed engine, checked on CPU with gloo.

The slow tests start real 2-process `torchrun` runs (``python -m torch.distributed.run``): the train stage
relaunching itself, and this file as the worker of the smaller checks (``python tests/test_distributed.py <job>``,
see the bottom). Children run with OMP_NUM_THREADS=1, as torchrun would set it, so 1- and 2-process runs do the
same arithmetic per batch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import distributed
from pipeline.engine import EpochSampler
from pipeline.params import ParamsError, TrainParams, parse_params
from tests.conftest import ROOT, TINY_PARAMS, git_env, make_project, merge

THIS = Path(__file__).resolve()

# 2-process vs 1-process final metrics, same global batch and seed. Not bit-equal on CPU: gloo has no SyncBatchNorm,
# so each rank's BatchNorm normalises with the statistics of its half of the batch (and DDP keeps rank 0's running
# statistics), and DDP sums gradients in another order. Measured on the tiny project below: train_loss differs by
# about 2e-3 and the evaluation metrics by at most one image or trial pair; a wrong split of the global batch
# (each rank seeing all of it, or another data order) moves train_loss by 0.05 and more.
LOSS_TOL = 0.02  # absolute, on a cross-entropy of about 3
METRIC_TOL = 0.05  # absolute, on accuracies over 48 images and an AUC over 60 trials


def child_env() -> dict[str, str]:
    env = git_env()
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    return env


def run_job(job: str, *args: str, nproc: int, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """This file as a worker: under torchrun with `nproc` processes, or plainly for one."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*(launch if nproc > 1 else [sys.executable]), str(THIS), job, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{job} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


# --- pure helpers (one process) ------------------------------------------------------------------------------------


def test_rank_share_keeps_every_global_batch_whole():
    order = np.random.default_rng(0).permutation(48)
    shares = [distributed.rank_share(order, 12, r, 3) for r in range(3)]
    for k in range(4):  # local batch k of every rank together is global batch k, in order
        assert np.concatenate([s[k * 4 : (k + 1) * 4] for s in shares]).tolist() == order[k * 12 : (k + 1) * 12].tolist()
    assert distributed.rank_share(order, 12, 0, 1) is order
    with pytest.raises(ValueError, match="cannot be shared"):
        distributed.rank_share(order, 10, 0, 3)


def test_epoch_sampler_ranks_together_yield_the_single_process_batches():
    one = list(EpochSampler(50, seed=3, batch_size=8))
    ranks = [EpochSampler(50, seed=3, batch_size=8, rank=r, world=2) for r in range(2)]
    assert [len(s) for s in ranks] == [24, 24]
    parts = [list(s) for s in ranks]
    rebuilt = [key for k in range(6) for part in parts for key in part[k * 4 : (k + 1) * 4]]
    assert rebuilt == one


@pytest.mark.parametrize(("n", "batch", "world"), [(37, 8, 2), (5, 8, 2), (100, 7, 3), (64, 16, 4), (0, 4, 2)])
def test_shard_ranges_are_whole_batches_covering_every_row_once(n, batch, world):
    ranges = [distributed.shard_range(n, batch, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert stop == start
    assert all(start % batch == 0 and start <= stop for start, stop in ranges)


def test_torchrun_command():
    single = distributed.torchrun_command(TrainParams(nproc_per_node=4), "pipeline.stages.train", ["--fold", "0"])
    assert single[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in single and "--standalone" in single
    assert single[-4:] == ["-m", "pipeline.stages.train", "--fold", "0"]
    multi = TrainParams(nnodes=2, nproc_per_node=8, rdzv_endpoint="node1:29400", rdzv_id="job7", node_rank=1)
    cmd = distributed.torchrun_command(multi, "m", [])
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node1:29400", "--rdzv-id=job7"} <= set(cmd)
    assert "--standalone" not in cmd and not any(a.startswith("--node-rank") for a in cmd)
    static = distributed.torchrun_command(multi.model_copy(update={"rdzv_backend": "static"}), "m", [])
    assert "--node-rank=1" in static


def test_no_relaunch_for_one_process_or_inside_torchrun(monkeypatch):
    assert not distributed.relaunch(TrainParams(), "pipeline.stages.train", [])
    monkeypatch.setenv("LOCAL_RANK", "0")  # what torchrun sets for its workers
    assert not distributed.relaunch(TrainParams(nproc_per_node=2), "pipeline.stages.train", [])


def test_one_process_helpers_are_no_ops():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.all_reduce_sum(1.5, 2) == (1.5, 2)
    rows = np.arange(6).reshape(3, 2)
    assert distributed.all_gather_rows(rows) is rows
    loss = torch.nn.MSELoss()
    assert distributed.wrap_for_global_batch(loss) is loss
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")


def test_backend_choice():
    cpu = torch.device("cpu")
    assert distributed.resolve_backend("auto", cpu) == "gloo"
    assert distributed.resolve_backend("auto", torch.device("cuda")) == "nccl"
    assert distributed.resolve_backend("gloo", cpu) == "gloo"
    with pytest.raises(ValueError, match="NCCL needs CUDA"):
        distributed.resolve_backend("nccl", cpu)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"batch_size": 30, "nproc_per_node": 4}, "divide evenly"),
        ({"nnodes": 2, "node_rank": 2}, "node_rank"),
        ({"device": "cpu", "backend": "nccl"}, "needs CUDA"),
        ({"device": "cpu", "sync_bn": True, "nproc_per_node": 2}, "SyncBatchNorm"),
        ({"rdzv_endpoint": "node1"}, "host:port"),
        ({"rdzv_backend": "etcd"}, "rdzv_backend"),
    ],
)
def test_params_refuse_inconsistent_launch_settings(train, message):
    with pytest.raises(ParamsError, match=message):
        parse_params({"train": train}, check_model=False)


def test_launch_settings_do_not_change_the_fingerprint_but_sync_bn_does(tmp_path):
    from pipeline.stages.train import fingerprint

    inputs = [tmp_path / "a"]
    inputs[0].write_text("x")
    base = fingerprint(parse_params({}, check_model=False), 0, inputs)
    launch = {"nproc_per_node": 4, "nnodes": 2, "node_rank": 1, "rdzv_endpoint": "n1:1", "backend": "gloo"}
    assert fingerprint(parse_params({"train": launch}, check_model=False), 0, inputs) == base
    assert fingerprint(parse_params({"train": {"sync_bn": True}}, check_model=False), 0, inputs) != base


# --- 2 gloo processes: losses and sharded inference ----------------------------------------------------------------


@pytest.mark.slow
def test_wrapped_pml_losses_see_the_global_batch(tmp_path):
    run_job("loss", str(tmp_path), nproc=2)
    for rank in range(2):
        r = json.loads((tmp_path / f"loss{rank}.json").read_text())
        for name in ("contrastive", "triplet"):
            assert r[name]["wrapped"] == pytest.approx(r[name]["global"], rel=1e-9), (rank, name)
            assert r[name]["local"] != pytest.approx(r[name]["global"], rel=1e-3), "the check cannot tell"
            assert r[name]["grad_error"] < 1e-9, (rank, name)  # world x the global gradient: DDP averages it back
        assert r["arcface_left_alone"]


@pytest.mark.slow
def test_sharded_inference_equals_one_process(tmp_path):
    run_job("infer", str(tmp_path), nproc=2)
    for rank in range(2):
        with np.load(tmp_path / f"infer{rank}.npz") as r:
            for case in ("37x8", "5x8"):  # 5 rows in batches of 8: rank 1 has no rows at all
                for what in ("emb", "probs"):
                    assert np.array_equal(r[f"{case}_sharded_{what}"], r[f"{case}_single_{what}"]), (rank, case, what)


# --- the train stage on 2 processes --------------------------------------------------------------------------------

STAGE_PARAMS = merge(TINY_PARAMS, {"folds": {"train": [0]}, "model": {"drop_rate": 0.0}})


def run_stage_cmds(project: Path, names: tuple[str, ...]) -> None:
    """The dvc.yaml commands of `names`, called in this process (one import of torch for all), in `project`."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    with contextlib.chdir(project):
        for name in names:
            _, _, module, *argv = stages[name]["cmd"].split()
            assert importlib.import_module(module).main(argv) == 0, name


@pytest.fixture(scope="module")
def stage_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("dist") / "project", STAGE_PARAMS)
    run_stage_cmds(project, ("download", "index", "decode", "folds", "augment"))
    two = merge(yaml.safe_load((project / "params.yaml").read_text()), {"train": {"nproc_per_node": 2}})
    (project / "params2.yaml").write_text(yaml.safe_dump(two, sort_keys=False))
    return project


def train_stage(project: Path, name: str, params: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.stages.train", "--params", params, "--fold", "0", "--index", "data/index"]
    cmd += ["--decoded", "data/decoded", "--folds", "folds/folds.csv", "--transform", "data/augment/transform.json"]
    cmd += ["--out", f"models/{name}", "--live", f"dvclive/{name}"]
    proc = subprocess.run(cmd, cwd=project, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.mark.slow
def test_train_stage_on_two_processes_matches_one(stage_project: Path):
    one = train_stage(stage_project, "one", "params.yaml")
    two = train_stage(stage_project, "two", "params2.yaml")
    epochs = STAGE_PARAMS["train"]["epochs"]

    assert "launching 1 x 2 processes" in two.stderr and "torch.distributed.run" in two.stderr
    assert "process group up: 2 ranks on gloo" in two.stderr
    assert two.stderr.count(f"epoch {epochs}/{epochs} train_loss") == 1, "a rank other than 0 logged progress"
    # rank 0 alone wrote: one checkpoint and one model, no stray temporary files, one dvclive row per epoch
    assert sorted(p.name for p in (stage_project / "models/two").iterdir()) == ["checkpoint.pt", "model.pt"]
    for tsv in (stage_project / "dvclive/two/plots/metrics").glob("*.tsv"):
        assert len(tsv.read_text().splitlines()) == 1 + epochs, f"{tsv.name}: one row per epoch expected"

    ckpt = {n: torch.load(stage_project / f"models/{n}/checkpoint.pt", weights_only=False) for n in ("one", "two")}
    assert (ckpt["one"]["world_size"], ckpt["two"]["world_size"]) == (1, 2)
    assert ckpt["two"]["fingerprint"] == ckpt["one"]["fingerprint"], "a 2-process checkpoint must resume in 1"
    assert list(ckpt["two"]["model"]) == list(ckpt["one"]["model"]), "same state-dict keys, no DDP 'module.' prefix"

    final = {n: json.loads((stage_project / f"dvclive/{n}/metrics.json").read_text()) for n in ("one", "two")}
    assert final["two"]["train_loss"] == pytest.approx(final["one"]["train_loss"], abs=LOSS_TOL)
    for key in ("val_accuracy", "fold_accuracy", "val_auc"):
        assert final["two"][key] == pytest.approx(final["one"][key], abs=METRIC_TOL), key


# --- checkpoints across world sizes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_resumes_on_another_world_size(tmp_path):
    def history(out: Path) -> list[dict]:
        return torch.load(out / "checkpoint.pt", weights_only=False)["history"]

    # 2 processes interrupted after epoch 1 (rank 0 stops as a kill would; torchrun then stops rank 1), 1 resumes
    a = tmp_path / "two_then_one"
    assert run_job("train", str(a), "1", nproc=2, check=False).returncode != 0
    assert torch.load(a / "checkpoint.pt", weights_only=False)["world_size"] == 2
    epoch1 = history(a)[0]
    resumed = run_job("train", str(a), "0", nproc=1)
    assert "resuming from" in resumed.stderr and "written by 2 processes; this run has 1" in resumed.stderr
    result = json.loads((a / "result.json").read_text())
    assert [row["epoch"] for row in result["seen"]] == [1, 2, 3]
    assert result["seen"][0] == epoch1, "epoch 1 is replayed from the 2-process checkpoint, not trained again"

    # 1 process interrupted after epoch 1, 2 resume
    b = tmp_path / "one_then_two"
    run_job("train", str(b), "1", nproc=1)
    assert torch.load(b / "checkpoint.pt", weights_only=False)["world_size"] == 1
    epoch1 = history(b)[0]
    resumed = run_job("train", str(b), "0", nproc=2)
    assert "written by 1 processes; this run has 2" in resumed.stderr
    result2 = json.loads((b / "result.json").read_text())
    assert [row["epoch"] for row in result2["seen"]] == [1, 2, 3]
    assert result2["seen"][0] == epoch1
    assert torch.load(b / "checkpoint.pt", weights_only=False)["world_size"] == 2

    # both reach the same place as far as per-rank BatchNorm allows (see LOSS_TOL), and they learnt
    assert result2["seen"][-1]["train_loss"] == pytest.approx(result["seen"][-1]["train_loss"], abs=LOSS_TOL * 5)
    assert result["seen"][-1]["train_loss"] < result["seen"][0]["train_loss"]
    assert result2["seen"][-1]["train_loss"] < result2["seen"][0]["train_loss"]


# --- the worker: `python tests/test_distributed.py <job> <args>`, alone or under torchrun ---------------------------


def _loss_job(out: Path) -> None:
    from pytorch_metric_learning import losses, miners

    distributed.init_from_env(TrainParams())
    rank, world = distributed.rank(), distributed.world_size()
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    labels = torch.arange(16) % 4
    share = slice(rank * 16 // world, (rank + 1) * 16 // world)
    result: dict = {}
    cases = {
        "contrastive": (lambda: losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), miners.MultiSimilarityMiner),
        "triplet": (lambda: losses.TripletMarginLoss(margin=0.2), lambda: None),
    }
    for name, (make_loss, make_miner) in cases.items():
        local = emb[share].clone().requires_grad_(True)
        miner = make_miner()
        pairs = distributed.wrap_for_global_batch(miner)(local, labels[share]) if miner is not None else None
        wrapped = distributed.wrap_for_global_batch(make_loss())(local, labels[share], pairs)
        wrapped.backward()
        full = emb.clone().requires_grad_(True)
        ref_miner = make_miner()
        reference = make_loss()(full, labels, ref_miner(full, labels) if ref_miner is not None else None)
        reference.backward()
        alone = make_loss()(emb[share], labels[share], make_miner()(emb[share], labels[share]) if miner else None)
        result[name] = {
            "wrapped": wrapped.item(),
            "global": reference.item(),
            "local": alone.item(),
            "grad_error": (local.grad - world * full.grad[share]).abs().max().item(),
        }
    arcface = losses.ArcFaceLoss(num_classes=4, embedding_size=8)
    result["arcface_left_alone"] = distributed.wrap_for_global_batch(arcface) is arcface
    (out / f"loss{rank}.json").write_text(json.dumps(result))


def _infer_job(out: Path) -> None:
    from pipeline.engine import FaceModel, infer
    from pipeline.params import ModelParams

    distributed.init_from_env(TrainParams())
    torch.manual_seed(0)
    model = FaceModel(ModelParams(name="resnet18", width=0.25, embedding_dim=16), 5).eval()
    images = np.random.default_rng(0).integers(0, 256, (37, 16, 16, 3), dtype=np.uint8)
    arrays = {}
    for n, batch in ((37, 8), (5, 8)):
        kw = dict(batch_size=batch, device=torch.device("cpu"))
        sharded, single = distributed.infer_sharded(model, images[:n], **kw), infer(model, images[:n], **kw)
        for what, s, o in zip(("emb", "probs"), sharded, single, strict=True):
            arrays[f"{n}x{batch}_sharded_{what}"], arrays[f"{n}x{batch}_single_{what}"] = s, o
    np.savez(out / f"infer{distributed.rank()}.npz", **arrays)


def _train_job(out: Path, stop_after: int) -> None:
    """Blob images (class = colour) as in tests/test_engine.py, with a fixed fingerprint: resumable on any world."""
    import logging

    from pipeline import augment
    from pipeline.engine import EvalSets, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    p = parse_params(
        {
            "model": {"name": "resnet18", "width": 0.25, "embedding_dim": 32, "stem_stride": 2},
            "train": {"epochs": 3, "batch_size": 16, "num_workers": 0, "verification_eval": False, "lr": 0.01},
        },
        check_model=False,
    )
    distributed.init_from_env(p.train)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 16)
    images = rng.integers(0, 255, (4, 3))[labels][:, None, None, :] + rng.integers(-20, 20, (64, 16, 16, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    seen: list[dict] = []

    def log_metrics(row: dict) -> None:
        seen.append(row)
        if row["epoch"] == stop_after:
            sys.exit(3)  # right after the checkpoint, as a kill would land

    sets = EvalSets(val_images=images, val_labels=labels)
    transform = augment.build(p.augment)
    try:
        train(p, images, np.arange(64), labels, 4, transform, sets, out, 1, "fixed", log_metrics)
    except SystemExit:
        if distributed.world_size() == 1:
            return  # one process: an orderly stop; under torchrun the non-zero exit stops the other rank
        raise
    if distributed.is_main():
        (out / "result.json").write_text(json.dumps({"seen": seen}))


if __name__ == "__main__":
    job, target, *rest = sys.argv[1:]
    {"loss": _loss_job, "infer": _infer_job, "train": _train_job}[job](Path(target), *map(int, rest))
