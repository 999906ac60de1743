"""Backbone (timm, or torchvision for the few architectures timm lacks) + embedding neck.

The network maps uint8-range images (float 0..255, NCHW) to an embedding: normalisation lives inside the model
so that a checkpoint carries it and no stage hard-codes mean/std.
"""

from __future__ import annotations

import logging

import timm
import torch
import torch.nn.functional as F
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet
from timm.models.vgg import VGG
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
    # FaceNet pools forward_features() itself; layers past it would be dead weights in the optimizer and EMA.
    if isinstance(model, VGG):
        model.pre_logits = nn.Identity()  # fc6/fc7 as 7x7 and 1x1 convs: ~100M weights at width 1
    elif isinstance(model, MobileNetV3):
        model.conv_head = nn.Identity()  # 1x1 conv applied after timm's own pooling
    _shrink_stem(model, p.stem_stride)
    return model


class TorchvisionTrunk(nn.Module):
    """The convolutional trunk of a torchvision classifier, with timm's `forward_features` / `num_features`.

    Submodules keep torchvision's names (`conv1`, `stage2`, `features`, ...), so torchvision weight files load.
    """

    LAYERS = {
        "shufflenet": ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"),
        "alexnet": ("features",),
        "squeezenet": ("features",),
    }

    def __init__(self, name: str):
        super().__init__()
        import torchvision

        family = next((f for f in self.LAYERS if name.startswith(f)), None)
        if family is None:
            raise ValueError(f"model.name: no torchvision trunk for {name!r} (families: {', '.join(self.LAYERS)})")
        net = torchvision.models.get_model(name, weights=None)
        self.layers = self.LAYERS[family]
        for layer in self.layers:
            self.add_module(layer, getattr(net, layer))
        if family == "shufflenet":
            self.num_features = net.conv5[0].out_channels
        elif family == "alexnet":
            # The last max-pool sits right before FaceNet's global pool anyway; without it a 32 px input with the
            # stock stem still leaves a 1x1 map instead of an empty one.
            self.features[-1] = nn.Identity()
            self.num_features = 256
        else:
            self.num_features = 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = getattr(self, layer)(x)
        return x

    forward = forward_features


def _tv_backbone(p: ModelParams) -> nn.Module:
    if p.pretrained:
        raise ValueError("model.pretrained hub weights are only wired for timm models; use model.pretrained_path")
    if p.width != 1.0:
        raise ValueError(f"model.width={p.width} is supported for timm ResNet-family models only, not {p.name!r}")
    net = TorchvisionTrunk(p.name.removeprefix(TV_PREFIX))
    _shrink_stem(net, p.stem_stride)
    return net


def _stride(module: nn.Module) -> int:
    """The largest stride of a convolution or pooling layer, 1 for anything else."""
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        stride = module.stride
        return max(stride) if isinstance(stride, tuple) else int(stride)
    return 1


def _shrink_stem(model: nn.Module, stem_stride: int) -> None:
    """Make the stem's first two downsampling steps reduce the input by `stem_stride` instead of 4.

    The steps are the first two strided convolutions or pools in module order: ResNet, DenseNet and ShuffleNet's
    stride-2 conv and max-pool, MobileNet's stem conv and first strided depthwise conv, VGG's first two max-pools,
    AlexNet's stride-4 conv and first max-pool. 2 undoes the second step (and makes a stride-4 first step
    stride 2), 1 undoes both: a pool becomes an identity, a convolution stride 1. Stock stems divide the side by
    4 before the first stage, which leaves a 32 px face 1x1 at the last one.
    """
    if stem_stride == 4:
        return
    steps = []
    for name, module in model.named_modules():
        if _stride(module) > 1:
            steps.append((name, module))
            if len(steps) == 2:
                break
    if len(steps) < 2:
        raise ValueError(f"model.stem_stride={stem_stride}: {type(model).__name__} has no two-step strided stem")
    undo = steps if stem_stride == 1 else steps[1:]
    for name, module in undo:
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())
    first = steps[0][1]
    if stem_stride == 2 and isinstance(first, nn.Conv2d) and _stride(first) > 2:
        first.stride = (2, 2)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al., TPAMI 2018): (mean x^p)^(1/p) with a learnt p.

    p = 1 is average pooling and large p approaches max pooling. Written here: timm has no GeM layer.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 with autocast off: x^3 of post-ReLU activations overflows fp16.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float().clamp(min=self.eps).pow(self.p)
            return F.adaptive_avg_pool2d(x, 1).pow(1.0 / self.p)


def _backbone(p: ModelParams) -> nn.Module:
    return _tv_backbone(p) if p.name.startswith(TV_PREFIX) else _timm_backbone(p)


class FaceNet(nn.Module):
    """Backbone features -> global pool (avg or GeM) -> dropout -> linear -> BatchNorm neck: the embedding.

    L2-normalise the embedding for scoring.
    """

    def __init__(self, p: ModelParams):
        super().__init__()
        self.backbone = _backbone(p)
        cfg = timm.data.resolve_model_data_config(self.backbone) if hasattr(self.backbone, "pretrained_cfg") else {}
        mean = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        features = int(self.backbone.num_features)
        if p.pool == "flatten":
            if not isinstance(p.pool_grid, int):
                raise ValueError("model.pool_grid: auto must be resolved first (pipeline.models.resolve_pool_grid)")
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(p.pool_grid), nn.BatchNorm2d(features), nn.Flatten())
            features *= p.pool_grid**2
        else:
            self.pool = GeM() if p.pool == "gem" else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p.drop_rate)
        self.neck = nn.Linear(features, p.embedding_dim, bias=False)
        self.neck_bn = nn.BatchNorm1d(p.embedding_dim)
        self.embedding_dim = p.embedding_dim
        if p.pretrained_path:
            load_backbone_weights(self.backbone, p.pretrained_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = self.pool(self.backbone.forward_features(x)).flatten(1)
        return self.neck_bn(self.neck(self.dropout(x)))


def last_feature_side(p: ModelParams, image_size: int) -> int:
    """Side of the backbone's last feature map for `image_size` px inputs, from one forward pass of zeros (exact
    for any stem, stride and padding; no pretrained weights are loaded)."""
    backbone = _backbone(p.model_copy(update={"pretrained": False})).eval()
    with torch.inference_mode():
        return int(backbone.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-1])


def resolve_pool_grid(p: ModelParams, image_size: int) -> ModelParams:
    """`p` with `pool_grid` an integer: for `auto`, the last feature map's side at `image_size`.

    Raises:
        ValueError: naming model.pool_grid and data.image_size, for a grid larger than the last map (adaptive
            pooling would only repeat its cells).
    """
    if p.pool != "flatten":
        return p
    side = last_feature_side(p, image_size)
    if p.pool_grid == "auto":
        log.info(
            "model.pool_grid: auto -> %d (the last feature map of %s at data.image_size=%d)", side, p.name, image_size
        )
        return p.model_copy(update={"pool_grid": side})
    if p.pool_grid > side:
        raise ValueError(
            f"model.pool_grid={p.pool_grid} is larger than the {side}x{side} last feature map of {p.name} at "
            f"data.image_size={image_size} (model.stem_stride={p.stem_stride}): use model.pool_grid: auto or at "
            f"most {side}, or a larger data.image_size"
        )
    return p


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
