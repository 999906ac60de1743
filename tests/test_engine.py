"""Training engine on tiny real data: it learns, resumes exactly, and stops cleanly on a non-finite loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import augment
from pipeline.device import amp_dtype, cpu_runs_bf16
from pipeline.engine import NonFiniteLoss, TrainData, plan_budget, train
from pipeline.monitor import EvalSets
from pipeline.params import Params, parse_params

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_params(loss: dict | None = None, **train) -> Params:
    return parse_params(
        {
            "data": {"image_size": 16},  # the blobs' side
            "model": {"name": "resnet18", "width": 0.25, "embedding_dim": 32, "stem_stride": 2},
            "loss": loss or {},
            "train": {
                "epochs": 3,
                "batch_size": 16,
                "num_workers": 0,
                "verification_eval": False,
                **train,
            },
        },
        check_model=False,
    )


def blobs(n_classes: int = 4, per_class: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    colours = rng.integers(0, 255, (n_classes, 3))
    images = colours[labels][:, None, None, :] + rng.integers(-20, 20, (len(labels), 16, 16, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def blob_data(p: Params) -> TrainData:
    images, labels = blobs()
    return TrainData(images, np.arange(len(images)), labels, 4, augment.build(p.augment))


def run_train(p: Params, out: Path, seen: list | None = None, budget: list | None = None):
    data = blob_data(p)
    sets = EvalSets(val_images=data.images, val_labels=data.labels)
    log = seen.append if seen is not None else lambda row: None
    model, ran = train(p, data, sets, out, seed=1, fingerprint=str(p.train), log_metrics=log)
    if budget is not None:
        budget.append(ran)
    return model


def test_learns_and_logs_every_epoch(tmp_path):
    seen: list = []
    run_train(tiny_params(epochs=4, lr=0.01), tmp_path, seen)
    assert [row["epoch"] for row in seen] == [1, 2, 3, 4]
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert seen[-1]["val_accuracy"] >= 0.75


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path):
    full = run_train(tiny_params(), tmp_path / "full")
    interrupted = tmp_path / "interrupted"
    assert _train_epochs(tiny_params(), interrupted, epochs_done=1) == 1
    seen: list = []
    resumed = run_train(tiny_params(), interrupted, seen)
    assert [row["epoch"] for row in seen] == [1, 2, 3]  # epoch 1 replayed from the checkpoint's history
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _train_epochs(p: Params, out: Path, epochs_done: int) -> int:
    """Run training and interrupt it right after `epochs_done` checkpoints, as a kill would."""

    class Interrupt(Exception):
        pass

    def stop(row):
        if row["epoch"] == epochs_done:
            raise Interrupt

    try:
        train(p, blob_data(p), EvalSets(), out, seed=1, fingerprint=str(p.train), log_metrics=stop)
    except Interrupt:
        pass
    return torch.load(out / "checkpoint.pt", weights_only=False)["epoch"]


def test_other_params_do_not_resume_a_checkpoint(tmp_path):
    run_train(tiny_params(epochs=2), tmp_path)
    seen: list = []
    run_train(tiny_params(epochs=3), tmp_path, seen)  # different fingerprint: starts again from epoch 1
    assert [row["epoch"] for row in seen] == [1, 2, 3]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run_train(tiny_params(epochs=2), tmp_path)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(NonFiniteLoss, match="last good checkpoint is kept"):
        run_train(tiny_params(epochs=2, lr=1e30, grad_clip=0.0, warmup_epochs=0.0), tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_amp_dtype_choice(caplog):
    cpu = torch.device("cpu")
    fast_bf16 = cpu_runs_bf16()
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        assert not fast_bf16  # AVX2 and below have no bf16 kernels (this project's AMD EPYC machines)
    assert amp_dtype(cpu, True, "auto") is None  # auto: full precision on every CPU, native bf16 or not
    assert amp_dtype(torch.device("cuda"), True, "auto") is torch.float16
    assert amp_dtype(cpu, False, "auto") is None
    with caplog.at_level("WARNING", logger="pipeline.device"):
        assert amp_dtype(cpu, True, "bfloat16") is torch.bfloat16  # asked for by name: given, with a warning if slow
    assert ("emulates it" in caplog.text) is not fast_bf16
    with pytest.raises(ValueError, match="float16 needs CUDA"):
        amp_dtype(cpu, True, "float16")


@pytest.mark.parametrize(
    "loss",
    [
        {"head": "arcface", "scale": 16.0, "center_weight": 0.01, "center_lr": 0.05},
        {"head": "cosface", "metric": "triplet", "miner": "semi_hard", "m_per_class": 4},
    ],
)
def test_margin_heads_centres_and_metric_losses_train(tmp_path, loss):
    p = tiny_params(loss, lr=0.01)
    seen: list = []
    model = run_train(p, tmp_path, seen)
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert "train_ce" in seen[-1]
    assert seen[-1]["val_accuracy"] >= 0.5
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    if loss.get("center_weight"):
        groups = ckpt["optimizer"]["param_groups"]
        assert [g["weight_decay"] for g in groups if g["initial_lr"] == 0.05] == [0.0]  # centres: own lr, no decay
    assert model.head.predict(torch.randn(2, 32)).shape == (2, 4)


def test_auto_epochs_reach_the_step_budget_in_whole_epochs(tmp_path):
    seen: list = []
    ran: list = []
    run_train(tiny_params(epochs="auto", steps=18), tmp_path, seen, ran)  # 64 images, batch 16: 4 steps per epoch
    assert [row["epoch"] for row in seen] == [1, 2, 3, 4, 5]
    assert (ran[0].epochs, ran[0].steps, ran[0].steps_per_epoch) == (5, 20, 4)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["scheduler"]["t_initial"] == 20  # the cosine schedule spans the steps that ran


def test_integer_epochs_run_exactly_that_many_whatever_the_step_budget(tmp_path):
    seen: list = []
    ran: list = []
    run_train(tiny_params(epochs=2, steps=1000, eval_every=2), tmp_path, seen, ran)
    assert [row["epoch"] for row in seen] == [1, 2] and (ran[0].epochs, ran[0].steps) == (2, 8)
    assert [row["epoch"] for row in seen if "val_accuracy" in row] == [2]


def test_plan_budget_names_the_knob_that_decided():
    auto = plan_budget(tiny_params(epochs="auto", steps=1040).train, 38)
    assert (auto.epochs, auto.steps, auto.eval_every) == (28, 1064, 2)  # about 12 evaluations
    assert "train.steps=1040" in auto.rule
    fixed = plan_budget(tiny_params(epochs=20).train, 38)
    assert (fixed.epochs, fixed.steps) == (20, 760) and "train.steps is not used" in fixed.rule
    with pytest.raises(ValueError, match="finetune.warmup_epochs"):
        plan_budget(tiny_params(epochs="auto", steps=10, warmup_epochs=2.0).train, 10, "finetune")


def test_phase_two_starts_from_the_phase_one_network_and_resumes(tmp_path):
    from pipeline.face_model import FaceModel, start_from
    from pipeline.models import resolve_pool_grid
    from pipeline.params import finetune_params

    base = tiny_params(lr=0.01).model_dump(mode="json")
    base["loss"]["center_weight"] = 0.01  # phase 1 with centre loss: its centres carry over too
    p = parse_params(
        {
            **base,
            "finetune": {
                "epochs": 2,
                "lr": 0.001,
                "loss": {"metric": "triplet", "miner": "batch_hard", "m_per_class": 4},
            },
        },
        check_model=False,
    )
    phase1 = run_train(p, tmp_path / "p1")
    p2 = finetune_params(p)
    assert (p2.train.epochs, p2.train.lr, p2.loss.metric, p2.loss.head) == (2, 0.001, "triplet", "linear")

    data = blob_data(p)
    sets = EvalSets(val_images=data.images, val_labels=data.labels)
    seen: list = []

    def phase2():
        model, _ = train(p2, data, sets, tmp_path / "p2", 2, "phase2", seen.append, init=phase1, prefix="finetune")
        return model

    before = {k: v.clone() for k, v in phase1.state_dict().items()}
    tuned = phase2()
    assert "train_metric" in seen[-1] and seen[-1]["val_accuracy"] >= 0.75  # the phase-1 head still classifies
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items() if k.startswith("net."))
    assert all(torch.equal(before[k], v) for k, v in phase1.state_dict().items())  # phase 1's model is untouched

    seen.clear()
    resumed = phase2()  # a finished phase 2 resumes from its own checkpoint: no step, the same weights
    assert [r["epoch"] for r in seen] == [1, 2]
    assert all(
        torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), resumed.state_dict().values(), strict=True)
    )

    net = resolve_pool_grid(p2.model, 16)
    fresh = FaceModel(net, p2.loss, 4)
    assert start_from(fresh, phase1) == ["network", "head", "center"]  # phase 1's centre loss included
    arc = FaceModel(net, p2.loss.model_copy(update={"head": "arcface"}), 4)
    assert start_from(arc, phase1) == ["network", "center"]  # a linear head's weights do not fit a cosine head
    cos = FaceModel(net, p2.loss.model_copy(update={"head": "cosface"}), 4)
    assert start_from(cos, arc) == ["network", "head", "center"]  # cosine heads share their class vectors
    assert torch.equal(cos.head.pml.W, arc.head.pml.W)
