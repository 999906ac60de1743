"""Seed architectures build and train at 32/64 px with the small-input stem; GeM; local weights; width."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import FaceNet, GeM, last_feature_side, resolve_pool_grid
from pipeline.params import ModelParams


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batch-2 passes gain nothing from intra-op threads, and on a loaded 2-core box their spin-waits cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SEED_ARCHS = ["resnet18", "densenet121", "mobilenetv2_100", "vgg11", "tv/shufflenet_v2_x0_5", "tv/alexnet"]


def params(name: str = "resnet18", **kw) -> ModelParams:
    kw.setdefault("width", 0.5 if name == "resnet18" else 1.0)  # the width knob is ResNet-only
    kw.setdefault("pool_grid", 2)
    return ModelParams(name=name, embedding_dim=32, **kw)


def images(side: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(side)) * 255.0


def feature_side(net: FaceNet, side: int) -> int:
    with torch.no_grad():
        return net.backbone.forward_features(images(side, 1)).shape[-1]


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("name", SEED_ARCHS)
def test_seed_architecture_trains_at_small_sizes(name, stem_stride, side):
    torch.manual_seed(0)
    net = FaceNet(resolve_pool_grid(params(name, stem_stride=stem_stride, pool_grid="auto"), side)).train()
    emb = net(images(side))
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
    emb.square().sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None]
    assert not dead, f"parameters outside the forward pass: {dead[:5]}"
    assert net.backbone.forward_features(images(side, 1)).shape[1] == net.backbone.num_features


@pytest.mark.parametrize("name", SEED_ARCHS)
def test_stem_stride_sets_the_early_downsampling(name):
    """Each step of stem_stride halves the stem's reduction, so the last feature map doubles in side."""
    sides = {s: feature_side(FaceNet(params(name, stem_stride=s)).eval(), 64) for s in (1, 2, 4)}
    assert sides[1] == 2 * sides[2]
    assert sides[2] >= 2 * sides[4] - 1  # AlexNet's 11x11 stride-4 conv rounds down
    assert feature_side(FaceNet(params(name, stem_stride=4)).eval(), 32) >= 1


def test_gem_matches_its_formula_and_learns_p():
    x = torch.rand(2, 8, 4, 4) + 0.1
    gem = GeM(p=3.0)
    want = (x**3).mean(dim=(2, 3), keepdim=True) ** (1 / 3)
    torch.testing.assert_close(gem(x), want)
    torch.testing.assert_close(GeM(p=1.0)(x), F.adaptive_avg_pool2d(x, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gem((x * 100).bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()

    net = FaceNet(params(pool="gem"))
    assert isinstance(net.pool, GeM)
    net(images(32)).sum().backward()
    assert net.pool.p.grad is not None and net.pool.p.grad != 0
    assert isinstance(FaceNet(params(pool="avg")).pool, torch.nn.AdaptiveAvgPool2d)


@pytest.mark.parametrize(("side", "stem_stride", "expected"), [(32, 2, 2), (64, 2, 4), (64, 4, 2), (32, 1, 4)])
def test_auto_pool_grid_is_the_last_feature_map(side, stem_stride, expected):
    p = params(stem_stride=stem_stride, pool_grid="auto")
    assert last_feature_side(p, side) == expected
    assert resolve_pool_grid(p, side).pool_grid == expected
    assert resolve_pool_grid(p.model_copy(update={"pool_grid": 1}), side).pool_grid == 1


def test_a_pool_grid_larger_than_the_last_map_is_an_error_naming_both_keys():
    with pytest.raises(ValueError, match=r"model.pool_grid=4 is larger than the 2x2 .* data.image_size=32"):
        resolve_pool_grid(params(stem_stride=2, pool_grid=4), 32)
    assert resolve_pool_grid(params(pool="avg", pool_grid=4), 32).pool_grid == 4  # not used by avg: no check
    with pytest.raises(ValueError, match="must be resolved"):
        FaceNet(params(pool_grid="auto"))


@pytest.mark.parametrize("side", [32, 64])
def test_flatten_pool_keeps_the_spatial_layout(side):
    """`pool: flatten` feeds the neck the whole (grid-pooled) map: moving a feature to another place on the face
    changes the embedding, where global average pooling cannot tell the two apart."""
    torch.manual_seed(0)
    net = FaceNet(params(pool="flatten", pool_grid=2, drop_rate=0.0)).eval()
    channels = net.backbone.num_features
    assert net.neck.in_features == channels * 4
    fmap = torch.zeros(1, channels, 2, 2)
    fmap[0, 0, 0, 0] = 1.0
    moved = fmap.roll(1, dims=3)
    with torch.no_grad():
        a, b = (net.neck_bn(net.neck(net.pool(m))) for m in (fmap, moved))
        assert not torch.allclose(a, b)
        avg = FaceNet(params(pool="avg", drop_rate=0.0)).eval()
        torch.testing.assert_close(avg.pool(fmap), avg.pool(moved))
    net.train()
    emb = net(images(side))  # 32 px leaves a 2x2 map at stem_stride 2, 64 px a 4x4 one: both pool to the grid
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
    emb.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", ["resnet18", "tv/shufflenet_v2_x0_5"])
def test_pretrained_path_loads_a_local_state_dict(tmp_path, name):
    torch.manual_seed(1)
    source = FaceNet(params(name))
    path = tmp_path / "weights.pt"
    torch.save({"model": source.backbone.state_dict()}, path)  # a checkpoint holding the state dict
    torch.manual_seed(2)
    loaded = FaceNet(params(name, pretrained_path=str(path)))
    fresh = FaceNet(params(name))
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(loaded.backbone.state_dict()[key], value)
    first = next(iter(source.backbone.state_dict()))
    assert not torch.equal(fresh.backbone.state_dict()[first], source.backbone.state_dict()[first])


def test_torchvision_trunk_keeps_torchvision_names(tmp_path):
    """A torchvision weights file (classifier included) loads into the trunk: only the classifier is left out."""
    import torchvision

    full = torchvision.models.shufflenet_v2_x0_5(weights=None)
    path = tmp_path / "shufflenet.pth"
    torch.save(full.state_dict(), path)
    net = FaceNet(params("tv/shufflenet_v2_x0_5", pretrained_path=str(path)))
    trunk = net.backbone.state_dict()
    assert set(full.state_dict()) - set(trunk) == {"fc.weight", "fc.bias"}
    for key, value in trunk.items():
        torch.testing.assert_close(value, full.state_dict()[key])


def test_pretrained_path_refuses_a_file_with_no_matching_tensor(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="no tensor matches the backbone"):
        FaceNet(params(pretrained_path=str(path)))


def test_width_multiplier_scales_resnet_and_is_refused_elsewhere():
    assert FaceNet(params(width=0.5)).backbone.num_features == 256
    assert FaceNet(params(width=1.0)).backbone.num_features == 512
    half = sum(p.numel() for p in FaceNet(params(width=0.5)).backbone.parameters())
    full = sum(p.numel() for p in FaceNet(params(width=1.0)).backbone.parameters())
    assert half < full / 3  # conv weights scale with width squared
    for name in ("densenet121", "tv/alexnet"):
        with pytest.raises(ValueError, match="model.width=0.5 is supported for timm ResNet-family models only"):
            FaceNet(params(name, width=0.5))


def test_hub_weights_are_off_by_default():
    assert ModelParams().pretrained is False and ModelParams().pretrained_path is None
