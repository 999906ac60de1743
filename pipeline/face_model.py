"""The trained artifact: embedding network plus training objective as one module, how a phase starts from another
phase's weights, and the inference file (`model.pt`) that the embed stage loads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.io import atomic_path
from pipeline.losses import build_objective
from pipeline.models import FaceNet
from pipeline.params import LossParams, ModelParams, Params


class FaceModel(nn.Module):
    """Embedding network + training objective (head, centres, metric loss), trained and EMA-averaged together.

    One module whose forward returns the loss, so that DDP averages the gradients of the head and the centres too.
    `model_params.pool_grid` must be resolved to an integer (`pipeline.models.resolve_pool_grid`).
    """

    def __init__(self, model_params: ModelParams, loss_params: LossParams, num_classes: int):
        super().__init__()
        self.net = FaceNet(model_params)
        self.objective = build_objective(loss_params, model_params.embedding_dim, num_classes)

    @property
    def head(self) -> nn.Module:
        return self.objective.head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.net(images), labels, label_smoothing)


def start_from(model: FaceModel, init: FaceModel) -> list[str]:
    """Copy `init`'s weights into `model`: the whole network, and each part of the objective (head, centres) whose
    kind and tensor shapes match. The cosine heads (NormFace and the margin heads) share one layout of class
    vectors, so e.g. ArcFace fine-tuning starts from a NormFace head's classes. Returns the parts carried over."""
    model.net.load_state_dict(init.net.state_dict())
    carried = ["network"]
    for name in ("head", "center"):
        mine, theirs = getattr(model.objective, name), getattr(init.objective, name)
        if mine is None or theirs is None or type(mine) is not type(theirs):
            continue
        a, b = mine.state_dict(), theirs.state_dict()
        if a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a):
            mine.load_state_dict(b)
            carried.append(name)
    return carried


def save_model(model: FaceModel, cfg: Params, classes: list[str], path: Path) -> None:
    """The inference artifact: weights (EMA), the model params to rebuild it and the class names."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "model_params": cfg.model.model_dump(mode="json"),
                "loss_params": cfg.loss.model_dump(mode="json"),
                "classes": classes,
            },
            tmp,
        )


def load_model(path: Path, device: torch.device) -> tuple[FaceModel, list[str]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    # the weights are all in the file: starting weights (hub or a local file) are not looked for again
    model_params = ModelParams(**{**ckpt["model_params"], "pretrained": False, "pretrained_path": None})
    if model_params.pool == "flatten" and not isinstance(model_params.pool_grid, int):
        raise ValueError(f"{path}: written without a resolved model.pool_grid; re-run the train stage")
    model = FaceModel(model_params, LossParams(**ckpt["loss_params"]), len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt["classes"]
