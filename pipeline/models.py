"""Backbone (timm, or torchvision for the few architectures timm lacks) + embedding neck.

The network maps uint8-range images (float 0..255, NCHW) to an embedding: normalisation lives inside the model
so that a checkpoint carries it and no stage hard-codes mean/std.
"""

from __future__ import annotations

import logging

import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import ResNet
from torch import nn

from pipeline.params import TV_PREFIX, ModelParams

log = logging.getLogger(__name__)

RESNET_CHANNELS = (64, 128, 256, 512)  # timm ResNet stage widths before the width multiplier


def _timm_backbone(p: ModelParams) -> nn.Module:
    kwargs: dict = {"num_classes": 0, "drop_rate": 0.0}
    if p.width != 1.0:
        # timm's ResNet family takes per-stage widths; other families have no common width knob.
        if not isinstance(timm.create_model(p.name, pretrained=False, num_classes=0), ResNet):
            raise ValueError(f"model.width={p.width} is supported for timm ResNet-family models only, not {p.name!r}")
        kwargs["channels"] = tuple(max(8, int(round(c * p.width))) for c in RESNET_CHANNELS)
    model = timm.create_model(p.name, pretrained=p.pretrained, **kwargs)
    _shrink_stem(model, p.stem_stride)
    return model


def _tv_backbone(p: ModelParams) -> nn.Module:
    import torchvision

    name = p.name.removeprefix(TV_PREFIX)
    if p.pretrained:
        raise ValueError("model.pretrained hub weights are only wired for timm models; use model.pretrained_path")
    net = torchvision.models.get_model(name, weights=None)
    if name.startswith("shufflenet"):
        net.fc = nn.Identity()
        net.num_features = net.conv5[0].out_channels
    elif name == "alexnet":
        # AlexNet's 11x11 stride-4 stem and three pools are built for 224 px; the adaptive pool keeps it runnable.
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Identity()
        net.num_features = 256
    elif name.startswith("squeezenet"):
        net.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net.num_features = 512
    _shrink_stem(net, p.stem_stride)
    return net


def _shrink_stem(model: nn.Module, stem_stride: int) -> None:
    """Drop the stem max-pool (stride 2) and also make the first convolution stride 1 (stride 1).

    timm's stock stems divide the side by 4 before the first stage (32 px -> 8 px -> 1 px at the last stage),
    which throws away most of a small face.
    """
    if stem_stride == 4:
        return
    convs_seen = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            convs_seen += 1
            if convs_seen == 1 and stem_stride == 1:
                module.stride = (1, 1)
            elif convs_seen > 3:
                break
        elif isinstance(module, nn.MaxPool2d) and convs_seen >= 1:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, nn.Identity())
            break


class FaceNet(nn.Module):
    """Backbone -> dropout -> linear -> BatchNorm neck: the embedding (L2-normalise it for scoring)."""

    def __init__(self, p: ModelParams):
        super().__init__()
        self.backbone = _tv_backbone(p) if p.name.startswith(TV_PREFIX) else _timm_backbone(p)
        cfg = timm.data.resolve_model_data_config(self.backbone) if hasattr(self.backbone, "pretrained_cfg") else {}
        mean = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        features = int(getattr(self.backbone, "num_features"))
        self.dropout = nn.Dropout(p.drop_rate)
        self.neck = nn.Linear(features, p.embedding_dim, bias=False)
        self.neck_bn = nn.BatchNorm1d(p.embedding_dim)
        self.embedding_dim = p.embedding_dim
        if p.pretrained_path:
            load_backbone_weights(self.backbone, p.pretrained_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = self.backbone(x)
        return self.neck_bn(self.neck(self.dropout(x)))


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local weights file (state dict or a checkpoint holding one) non-strictly, logging what is skipped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone.load_state_dict(usable, strict=False)
    log.info("loaded %d/%d tensors from %s", len(usable), len(own), path)
    if not usable:
        raise ValueError(f"model.pretrained_path {path}: no tensor matches the backbone {type(backbone).__name__}")


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=1)
