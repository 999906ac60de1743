"""Training engine on tiny real data: it learns, resumes exactly, and stops cleanly on a non-finite loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import augment
from pipeline.engine import EvalSets, FaceModel, NonFiniteLoss, amp_dtype, train
from pipeline.params import Params, parse_params

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_params(loss: dict | None = None, **train) -> Params:
    return parse_params(
        {
            "model": {"name": "resnet18", "width": 0.25, "embedding_dim": 32, "stem_stride": 2},
            "loss": loss or {},
            "train": {
                "epochs": 3,
                "min_steps": 0,
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


def run_train(p: Params, out: Path, seen: list | None = None):
    images, labels = blobs()
    rows = np.arange(len(images))
    sets = EvalSets(val_images=images, val_labels=labels)
    log = seen.append if seen is not None else lambda row: None
    transform = augment.build(p.augment)
    return train(p, images, rows, labels, 4, transform, sets, out, seed=1, fingerprint=str(p.train), log_metrics=log)


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

    images, labels = blobs()
    try:
        train(
            p,
            images,
            np.arange(len(images)),
            labels,
            4,
            augment.build(p.augment),
            EvalSets(),
            out,
            seed=1,
            fingerprint=str(p.train),
            log_metrics=stop,
        )
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


def test_amp_dtype_choice():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, True, "auto") is torch.bfloat16
    assert amp_dtype(cpu, False, "auto") is None
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


def test_min_steps_gives_a_small_data_set_more_epochs(tmp_path):
    seen: list = []
    run_train(tiny_params(epochs=2, min_steps=18), tmp_path, seen)  # 64 images, batch 16: 4 steps per epoch
    assert [row["epoch"] for row in seen] == [1, 2, 3, 4, 5]
    assert [row["epoch"] for row in seen if "val_accuracy" in row] == [2, 4, 5]  # no more evaluations than planned


def test_phase_two_starts_from_the_phase_one_network_and_resumes(tmp_path):
    from pipeline.engine import start_from
    from pipeline.params import finetune_params

    p = parse_params(
        {
            **tiny_params(lr=0.01).model_dump(mode="json"),
            "finetune": {
                "min_steps": 0,
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

    images, labels = blobs()
    sets = EvalSets(val_images=images, val_labels=labels)
    seen: list = []

    def phase2():
        return train(
            p2,
            images,
            np.arange(len(images)),
            labels,
            4,
            augment.build(p.augment),
            sets,
            tmp_path / "p2",
            seed=2,
            fingerprint="phase2",
            log_metrics=seen.append,
            init=phase1,
        )

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

    fresh = FaceModel(p2.model, p2.loss, 4)
    assert start_from(fresh, phase1) == ["network", "head", "center"]  # the default loss has centre loss
    arc = FaceModel(p2.model, p2.loss.model_copy(update={"head": "arcface"}), 4)
    assert start_from(arc, phase1) == ["network", "center"]  # a linear head's weights do not fit a cosine head
    cos = FaceModel(p2.model, p2.loss.model_copy(update={"head": "cosface"}), 4)
    assert start_from(cos, arc) == ["network", "head", "center"]  # cosine heads share their class vectors
    assert torch.equal(cos.head.pml.W, arc.head.pml.W)
