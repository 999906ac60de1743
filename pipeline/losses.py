"""Classification heads and losses on top of the embedding.

A head owns the class weights and turns embeddings into logits; the loss is cross-entropy on those logits.
Margin heads (CosFace, ArcFace, ...) transform logits only while training, so `predict` is margin-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Module):
    """Plain softmax classifier: logits = W e + b."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embeddings)

    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
