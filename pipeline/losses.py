"""Classification heads, auxiliary losses and the training objective built from `LossParams`.

A head owns the class weights and turns embeddings into logits (insightface arcface_torch style): given labels
(training) a margin head moves the target logit; `predict` never applies a margin, so softmax(predict) are the
classification probabilities. The objective adds cross-entropy (with label smoothing), the optional centre loss and
the optional pair/triplet loss.

Where the code comes from: NormFace, SphereFace, CosFace, ArcFace and sub-centre ArcFace weights and logit formulas,
the contrastive and triplet losses, their miners and the m-per-class sampler are pytorch-metric-learning (pml).
Written here: the plain linear head, the centre loss (pml has none) and the wrappers. All losses run in fp32 with
autocast off, whatever precision the network ran in: margins near cos = +-1 and pml's in-place dtype casts of its
weight matrix do not survive bf16/fp16.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from pipeline.params import LossParams

log = logging.getLogger(__name__)


def _fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off, so the loss maths runs in fp32 even inside the training step's autocast region."""
    return torch.autocast(device.type, enabled=False)


class LinearHead(nn.Module):
    """Plain softmax classifier: logits = W e + b (runs under the caller's autocast, as before)."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embeddings)

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)


class PmlHead(nn.Module):
    """A pml classification loss used as a head: its weight matrix `pml.W` (embedding x classes) are the classes.

    Training logits are built from pml's own pieces (`get_cosine`, `modify_cosine_of_target_classes`,
    `scale_logits`) exactly as pml's `compute_loss` builds them, so cross-entropy on them without label smoothing
    equals pml's loss value (tests/test_losses.py checks it); label smoothing, which pml lacks, is then plain
    `F.cross_entropy`. `predict` is pml's margin-free `get_logits`.
    """

    # SphereFace's lambda schedule (Liu et al. 2017, their released training prototxt): lambda = max(LAMBDA_MIN,
    # LAMBDA_BASE * (1 + LAMBDA_GAMMA * iteration) ** -LAMBDA_POWER). pml lacks it; without it A-Softmax with
    # m = 4 does not start learning from scratch (the lfw158 run stayed at AUC 0.50).
    LAMBDA_BASE, LAMBDA_GAMMA, LAMBDA_POWER, LAMBDA_MIN = 1000.0, 0.12, 1.0, 5.0

    def __init__(self, loss: nn.Module, anneal: bool = False):
        super().__init__()
        self.pml = loss
        # NormalizedSoftmaxLoss (NormFace) has no margin; the LargeMarginSoftmaxLoss family does.
        self.has_margin = isinstance(loss, pml_losses.LargeMarginSoftmaxLoss)
        # anneal: the target logit is (lambda * cos + psi) / (1 + lambda), lambda falling with the training steps
        # counted here (a buffer, so it checkpoints and resumes with the weights).
        self.anneal = anneal
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def margin_lambda(self) -> float:
        """The current blend weight of the plain cosine in the target logit (0 = the full margin)."""
        if not self.anneal:
            return 0.0
        decayed = self.LAMBDA_BASE * (1.0 + self.LAMBDA_GAMMA * float(self.iteration)) ** -self.LAMBDA_POWER
        return max(self.LAMBDA_MIN, decayed)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None or not self.has_margin:
            return self.predict(embeddings)
        with _fp32(embeddings.device):
            emb = embeddings.float()
            self.pml.cast_types(torch.float32, emb.device)  # moves SphereFace's float64 binomial tables; W stays fp32
            cosine = self.pml.get_cosine(emb)
            mask = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
            target = cosine[mask == 1]  # row order, one per sample
            # pml clamps to [-1, 1] before acos; the pole's infinite derivative is masked there (a test checks it).
            diff = (self.pml.modify_cosine_of_target_classes(target) - target).unsqueeze(1)
            diff = diff / (1.0 + self.margin_lambda())
            if self.training:
                self.iteration += 1
            return self.pml.scale_logits(cosine + mask * diff, emb).float()

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        with _fp32(embeddings.device):
            return self.pml.get_logits(embeddings.float()).float()

    def pml_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """pml's own loss value (no label smoothing): the reference the head's logits must reproduce."""
        with _fp32(embeddings.device):
            return self.pml(embeddings.float(), labels)


class CenterLoss(nn.Module):
    """Centre loss (Wen et al., ECCV 2016): 0.5 * mean_i ||x_i - c_{y_i}||^2 on the raw embedding.

    Written by hand: pytorch-metric-learning has no centre loss. The centres are a parameter learnt by the
    optimizer in their own param group (`Objective.param_groups`, `loss.center_lr`, no weight decay) rather than
    with the paper's moving-average rule (alpha), so they checkpoint and resume with the optimizer state.
    """

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with _fp32(embeddings.device):
            # index_select, not centers[labels]: on CPU the backward of advanced indexing accumulates the rows of
            # repeated labels with atomic adds across threads, in a different order on every run (the weights
            # of two runs with the same seed drifted apart); index_select's backward (index_add_) is ordered
            diff = embeddings.float() - torch.index_select(self.centers.float(), 0, labels)
            return 0.5 * diff.pow(2).sum(dim=1).mean()


class MetricLoss(nn.Module):
    """pml contrastive or triplet loss on the embeddings (L2 distance of L2-normalised vectors), optionally mined."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with _fp32(embeddings.device):
            emb = embeddings.float()
            indices = self.miner(emb, labels) if self.miner is not None else None
            return self.loss(emb, labels, indices)


class Objective(nn.Module):
    """Training loss: cross-entropy on the head's logits + centre loss + metric loss, each weighted by params."""

    def __init__(
        self,
        head: nn.Module,
        center: CenterLoss | None = None,
        center_weight: float = 0.0,
        center_lr: float = 0.01,
        metric: MetricLoss | None = None,
        metric_weight: float = 1.0,
        head_weight: float = 1.0,
    ):
        super().__init__()
        self.head, self.center, self.metric = head, center, metric
        self.center_weight, self.center_lr, self.metric_weight = center_weight, center_lr, metric_weight
        self.head_weight = head_weight

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (fp32 scalar) and its unweighted parts by name (`ce`, `center`, `metric`), as floats."""
        logits = self.head(embeddings, labels)
        ce = classification_loss(logits, labels, label_smoothing)
        parts = {"ce": ce.detach()}
        # head_weight 0 (a metric loss alone) still runs the head: its logits keep the classification predictions
        # and DDP expects every parameter to take part in the graph.
        total = ce * self.head_weight
        if self.center is not None:
            c = self.center(embeddings, labels)
            total = total + self.center_weight * c
            parts["center"] = c.detach()
        if self.metric is not None:
            m = self.metric(embeddings, labels)
            total = total + self.metric_weight * m
            parts["metric"] = m.detach()
        return total, {k: float(v) for k, v in parts.items()}

    def param_groups(self, base_lr: float, include_head: bool = True) -> list[dict]:
        """Optimizer param groups: head weights at `base_lr`, centres at `loss.center_lr` without weight decay.

        Pass `include_head=False` when the head is registered in the model whose parameters the optimizer already
        gets (a parameter may sit in one group only).
        """
        groups = []
        if include_head:
            groups.append({"params": list(self.head.parameters()), "lr": base_lr})
        if self.center is not None:
            groups.append({"params": [self.center.centers], "lr": self.center_lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]


def build_head(loss: LossParams, embedding_dim: int, num_classes: int) -> nn.Module:
    """The classification head named by `loss.head`, with margins converted to the unit pml expects."""
    kw = {"num_classes": num_classes, "embedding_size": embedding_dim}
    if loss.head == "linear":
        return LinearHead(embedding_dim, num_classes)
    if loss.head == "normface":
        return PmlHead(pml_losses.NormalizedSoftmaxLoss(temperature=1.0 / loss.scale, **kw))
    if loss.head == "sphereface":
        if loss.scale != 1.0:
            log.warning(
                "loss.scale=%g with sphereface: A-Softmax logits are already ||x|| cos(m theta); the paper uses 1",
                loss.scale,
            )
        return PmlHead(pml_losses.SphereFaceLoss(margin=loss.sphereface_m, scale=loss.scale, **kw), anneal=True)
    if loss.head == "cosface":
        return PmlHead(pml_losses.CosFaceLoss(margin=loss.margin_cos, scale=loss.scale, **kw))
    # pml's ArcFace family takes the margin in degrees; params hold radians.
    degrees = math.degrees(loss.margin_rad)
    if loss.head == "arcface":
        return PmlHead(pml_losses.ArcFaceLoss(margin=degrees, scale=loss.scale, **kw))
    if loss.head == "subcenter_arcface":
        return PmlHead(
            pml_losses.SubCenterArcFaceLoss(margin=degrees, scale=loss.scale, sub_centers=loss.subcenters, **kw)
        )
    raise ValueError(f"loss.head: unknown head {loss.head!r}")


def build_metric(loss: LossParams) -> MetricLoss | None:
    if loss.metric == "none":
        return None
    if loss.metric == "contrastive":
        criterion = pml_losses.ContrastiveLoss(pos_margin=loss.pos_margin, neg_margin=loss.neg_margin)
    else:
        criterion = pml_losses.TripletMarginLoss(margin=loss.triplet_margin)
    miner = None
    if loss.miner == "batch_hard":
        miner = pml_miners.BatchHardMiner()
    elif loss.miner == "semi_hard":
        miner = pml_miners.TripletMarginMiner(margin=loss.triplet_margin, type_of_triplets="semihard")
    return MetricLoss(criterion, miner)


def build_objective(loss: LossParams, embedding_dim: int, num_classes: int) -> Objective:
    """Head + auxiliary losses from the `loss:` params section."""
    center = CenterLoss(embedding_dim, num_classes) if loss.center_weight > 0 else None
    return Objective(
        build_head(loss, embedding_dim, num_classes),
        center=center,
        center_weight=loss.center_weight,
        center_lr=loss.center_lr,
        metric=build_metric(loss),
        metric_weight=loss.metric_weight,
        head_weight=loss.head_weight,
    )


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Softmax cross-entropy with label smoothing, in fp32."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
