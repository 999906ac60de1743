"""Every head and loss against a few-line reference formula, in fp32 and under bf16 autocast."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import (
    CenterLoss,
    LinearHead,
    Objective,
    PmlHead,
    build_objective,
    classification_loss,
)
from pipeline.params import LossParams, ParamsError, parse_params

DIM, CLASSES = 16, 5
FP32 = {"rtol": 1e-5, "atol": 1e-5}
# Inputs are bf16 values; the losses must still run in fp32, so only the reference's own rounding differs. A loss
# computed in bf16 misses this by about 1e-2.
BF16 = {"rtol": 1e-3, "atol": 1e-3}


def batch(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    return torch.randn(n, DIM, generator=g).bfloat16().float(), labels  # exactly representable in bf16


def run(fn, emb: torch.Tensor, bf16: bool):
    """Call `fn` on the embeddings: as given, or as a bf16 tensor inside a CPU bf16 autocast region."""
    if not bf16:
        return fn(emb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(emb.bfloat16())


def cosines(emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos(x_i, w_j) for class weights stored as pml stores them, (embedding, classes)."""
    return F.normalize(emb, dim=1) @ F.normalize(weight.detach(), dim=0)


def with_target(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    out[torch.arange(len(labels)), labels] = target
    return out


def ce_reference(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    logp = torch.log_softmax(logits.double(), dim=1)
    nll = -logp[torch.arange(len(labels)), labels]
    return ((1 - eps) * nll - eps * logp.mean(dim=1)).mean().float()


def head_for(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_objective(LossParams(**kw), DIM, CLASSES).head


precisions = pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])


@precisions
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_with_label_smoothing(bf16, eps):
    emb, labels = batch()
    head = head_for(head="linear")
    assert isinstance(head, LinearHead)
    logits = run(lambda e: head(e, labels), emb, bf16)
    got = classification_loss(logits, labels, eps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ce_reference(logits.float(), labels, eps), **FP32)
    torch.testing.assert_close(got, ce_reference(head.fc(emb).detach(), labels, eps), rtol=2e-2, atol=2e-2)


@precisions
def test_normface_logits_are_scaled_cosines_without_margin(bf16):
    emb, labels = batch()
    head = head_for(head="normface", scale=20.0)
    want = 20.0 * cosines(emb, head.pml.W)
    torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))
    torch.testing.assert_close(run(head.predict, emb, bf16), want, **(BF16 if bf16 else FP32))


@precisions
def test_cosface_subtracts_the_cosine_margin_from_the_target_only(bf16):
    emb, labels = batch()
    head = head_for(head="cosface", scale=30.0, margin_cos=0.35)
    cos = cosines(emb, head.pml.W)
    want = 30.0 * (cos - 0.35 * F.one_hot(labels, CLASSES))
    torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))


def arcface_target(cos_y: torch.Tensor, m: float) -> torch.Tensor:
    theta = torch.acos(cos_y)
    return torch.where(theta + m <= math.pi, torch.cos(theta + m), cos_y - m * math.sin(m))


@precisions
def test_arcface_adds_the_angle_margin_in_radians(bf16):
    emb, labels = batch()
    head = head_for(head="arcface", scale=64.0, margin_rad=0.5)
    cos = cosines(emb, head.pml.W)
    want = 64.0 * with_target(cos, labels, arcface_target(cos[torch.arange(len(labels)), labels], 0.5))
    torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))


def test_arcface_margin_unit_is_converted_from_radians_to_pml_degrees():
    head = head_for(head="arcface", margin_rad=0.5)
    # pml takes degrees and stores radians: 0.5 rad is its 28.6 degree default, not 0.5 degree.
    assert head.pml.margin == pytest.approx(0.5)
    assert math.degrees(0.5) == pytest.approx(28.6, abs=0.05)
    sub = head_for(head="subcenter_arcface", margin_rad=0.3)
    assert sub.pml.margin == pytest.approx(0.3)


def test_arcface_keeps_the_logit_monotone_past_pi_minus_m():
    """Beyond theta = pi - m, cos(theta + m) would rise again; the head falls back to cos(theta) - m sin(m)."""
    head = head_for(head="arcface", scale=1.0, margin_rad=1.0)
    w = F.normalize(head.pml.W.detach()[:, 0], dim=0)
    emb = (-w).unsqueeze(0)  # theta = pi for class 0
    logit = head(emb, torch.tensor([0]))[0, 0]
    assert logit.item() == pytest.approx(-1.0 - math.sin(1.0), abs=1e-4)


@precisions
def test_subcenter_arcface_takes_the_closest_subcentre_then_the_margin(bf16):
    emb, labels = batch()
    head = head_for(head="subcenter_arcface", scale=30.0, margin_rad=0.4, subcenters=3)
    assert head.pml.W.shape == (DIM, CLASSES * 3)
    cos = cosines(emb, head.pml.W).view(len(emb), CLASSES, 3).max(dim=2).values
    want = 30.0 * with_target(cos, labels, arcface_target(cos[torch.arange(len(labels)), labels], 0.4))
    torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))
    torch.testing.assert_close(run(head.predict, emb, bf16), 30.0 * cos, **(BF16 if bf16 else FP32))


@precisions
@pytest.mark.parametrize("m", [2, 4])
def test_sphereface_uses_psi_of_m_theta_times_the_embedding_norm(bf16, m):
    emb, labels = batch()
    head = head_for(head="sphereface", scale=1.0, sphereface_m=m)
    head.anneal = False  # the margin alone; the annealed blend is checked below
    cos = cosines(emb, head.pml.W)
    theta = torch.acos(cos[torch.arange(len(labels)), labels])
    k = torch.floor(m * theta / math.pi)
    psi = (-1.0) ** k * torch.cos(m * theta) - 2 * k  # A-Softmax, Liu et al. 2017, eq. 7
    want = emb.norm(dim=1, keepdim=True) * with_target(cos, labels, psi)
    torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))


@precisions
def test_sphereface_anneals_from_the_plain_cosine_to_the_margin(bf16):
    """Target logit ||x|| (lambda cos + psi) / (1 + lambda), lambda = max(5, 1000 / (1 + 0.12 t)) at training
    step t (the SphereFace paper's schedule); evaluation neither blends nor counts."""
    emb, labels = batch()
    head = head_for(head="sphereface", scale=1.0, sphereface_m=4)
    cos = cosines(emb, head.pml.W)
    theta = torch.acos(cos[torch.arange(len(labels)), labels])
    k = torch.floor(4 * theta / math.pi)
    psi = (-1.0) ** k * torch.cos(4 * theta) - 2 * k
    target = cos[torch.arange(len(labels)), labels]
    norm = emb.norm(dim=1, keepdim=True)
    for step, lam in ((0, 1000.0), (1, 1000.0 / 1.12), (10_000, 5.0)):
        head.iteration.fill_(step)
        want = norm * with_target(cos, labels, (lam * target + psi) / (1 + lam))
        torch.testing.assert_close(run(lambda e: head(e, labels), emb, bf16), want, **(BF16 if bf16 else FP32))
        assert int(head.iteration) == step + 1
    head.eval()
    head(emb, labels)
    assert int(head.iteration) == 10_001


MARGIN_HEADS = [
    {"head": "normface"},
    {"head": "sphereface", "scale": 1.0},
    {"head": "cosface"},
    {"head": "arcface"},
    {"head": "subcenter_arcface"},
]


@precisions
@pytest.mark.parametrize("kw", MARGIN_HEADS, ids=lambda kw: kw["head"])
def test_cross_entropy_on_head_logits_equals_pml_loss(kw, bf16):
    """The head builds logits from pml's pieces; without label smoothing the loss is pml's own."""
    emb, labels = batch()
    head = head_for(**kw)
    assert isinstance(head, PmlHead)
    head.anneal = False  # pml has no SphereFace annealing
    ours = classification_loss(run(lambda e: head(e, labels), emb, bf16), labels, 0.0)
    torch.testing.assert_close(ours, head.pml_loss(emb, labels), **(BF16 if bf16 else FP32))
    assert head.pml.W.dtype == torch.float32  # pml casts W to the input dtype in place; the head never lets it


@pytest.mark.parametrize("kw", MARGIN_HEADS[1:], ids=lambda kw: kw["head"])
def test_predict_has_no_margin(kw):
    emb, labels = batch()
    head = head_for(**kw)
    train, plain = head(emb, labels), head.predict(emb)
    target = F.one_hot(labels, CLASSES).bool()
    torch.testing.assert_close(train[~target], plain[~target])
    assert (train[target] < plain[target]).all()  # every margin lowers the target logit
    torch.testing.assert_close(head(emb), plain)  # no labels: no margin


def test_arcface_gradient_stays_finite_on_the_class_centre():
    head = head_for(head="arcface")
    with torch.no_grad():
        head.pml.W[:, :2] = torch.eye(DIM)[:, :2]  # basis vectors: the cosine below is exactly 1, acos'(1) infinite
    emb = (3.0 * torch.eye(DIM)[:2]).requires_grad_(True)
    assert (cosines(emb, head.pml.W).diagonal() == 1.0).all()
    classification_loss(head(emb, torch.tensor([0, 1])), torch.tensor([0, 1]), 0.1).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.pml.W.grad).all()


@precisions
def test_center_loss_is_half_mean_squared_distance_to_the_class_centre(bf16):
    emb, labels = batch()
    torch.manual_seed(0)
    center = CenterLoss(DIM, CLASSES)
    want = 0.5 * ((emb - center.centers.detach()[labels]) ** 2).sum(dim=1).mean()
    got = run(lambda e: center(e, labels), emb, bf16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, **(BF16 if bf16 else FP32))


def test_centre_gradients_are_the_same_on_every_run():
    """Many images of few classes, summed on 2 threads: with `centers[labels]` the backward's atomic adds gave
    a different centre gradient on nearly every call (50 of 50 here), so two trainings with one seed diverged."""
    torch.manual_seed(0)
    center = CenterLoss(256, 4300)
    labels = torch.randint(0, 40, (512,))
    emb = torch.randn(512, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = set()
        for _ in range(20):
            center.centers.grad = None
            center(emb, labels).backward()
            grads.add(center.centers.grad.numpy().tobytes())
    finally:
        torch.set_num_threads(threads)
    assert len(grads) == 1


def test_centres_learn_in_their_own_param_group():
    emb, labels = batch(n=8)  # classes 0..4, so all five centres are used
    labels = labels % 3  # ...now only 0..2: centres 3 and 4 must not move
    torch.manual_seed(0)
    objective = build_objective(LossParams(center_weight=0.5, center_lr=0.2), DIM, CLASSES)
    groups = objective.param_groups(base_lr=0.01)
    assert [g["lr"] for g in groups] == [0.01, 0.2]
    assert groups[1]["params"] == [objective.center.centers] and groups[1]["weight_decay"] == 0.0
    assert objective.param_groups(0.01, include_head=False) == groups[1:]
    before = objective.center.centers.detach().clone()
    total, parts = objective(emb, labels, 0.1)
    total.backward()
    grad = objective.center.centers.grad.clone()
    # d/dc_j of 0.5 * lambda * mean_i ||x_i - c_{y_i}||^2 = lambda / B * sum_{i: y_i = j} (c_j - x_i)
    want = torch.zeros_like(before).index_add_(0, labels, before[labels] - emb) * 0.5 / len(emb)
    torch.testing.assert_close(grad, want)
    torch.optim.SGD(groups, lr=123.0).step()
    torch.testing.assert_close(objective.center.centers.detach(), before - 0.2 * grad)
    torch.testing.assert_close(objective.center.centers.detach()[3:], before[3:])
    assert set(parts) == {"ce", "center"}
    assert total.item() == pytest.approx(parts["ce"] + 0.5 * parts["center"], rel=1e-6)


# ----- contrastive and triplet losses, brute force over every pair and triplet of a small batch -----


def distances(emb: torch.Tensor) -> torch.Tensor:
    x = F.normalize(emb.double(), dim=1)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt()


def mean_nonzero(values: list[float]) -> float:
    kept = [v for v in values if v > 0]
    return sum(kept) / len(kept) if kept else 0.0


def triplets(labels: list[int], d: torch.Tensor, miner: str, margin: float) -> list[tuple[int, int, int]]:
    n = len(labels)
    same = [(a, p) for a, p in itertools.permutations(range(n), 2) if labels[a] == labels[p]]
    every = [(a, p, k) for a, p in same for k in range(n) if labels[k] != labels[a]]
    if miner == "none":
        return every
    if miner == "semi_hard":  # the negative is farther than the positive, but by no more than the margin
        return [(a, p, k) for a, p, k in every if 0 < d[a, k] - d[a, p] <= margin]
    out = []  # batch hard: the farthest positive and the nearest negative of every anchor
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [k for k in range(n) if labels[k] != labels[a]]
        if pos and neg:
            out.append((a, max(pos, key=lambda p: d[a, p]), min(neg, key=lambda k: d[a, k])))
    return out


def triplet_reference(emb, labels, miner, margin) -> float:
    d = distances(emb)
    return mean_nonzero([float(d[a, p] - d[a, k] + margin) for a, p, k in triplets(labels, d, miner, margin)])


def contrastive_reference(emb, labels, miner, pos_margin, neg_margin, triplet_margin) -> float:
    d = distances(emb)
    if miner == "none":
        pairs = list(itertools.permutations(range(len(labels)), 2))
        pos = [(a, b) for a, b in pairs if labels[a] == labels[b]]
        neg = [(a, b) for a, b in pairs if labels[a] != labels[b]]
    else:  # mined triplets count as one positive and one negative pair each
        mined = triplets(labels, d, miner, triplet_margin)
        pos, neg = [(a, p) for a, p, _ in mined], [(a, k) for a, _, k in mined]
    return mean_nonzero([float(d[a, b] - pos_margin) for a, b in pos]) + mean_nonzero(
        [float(neg_margin - d[a, b]) for a, b in neg]
    )


@precisions
@pytest.mark.parametrize("miner", ["none", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("metric", ["contrastive", "triplet"])
def test_metric_losses_with_miners_match_brute_force(metric, miner, bf16):
    emb, labels = batch(n=12, seed=3)
    emb = emb[:, :4].contiguous()  # few dimensions: a useful mix of easy, semi-hard and hard triplets
    kw = {"pos_margin": 0.2, "neg_margin": 1.2, "triplet_margin": 0.4}
    objective = build_objective(LossParams(metric=metric, miner=miner, **kw), 4, CLASSES)
    got = run(lambda e: objective.metric(e, labels), emb, bf16)
    assert got.dtype == torch.float32
    ids = labels.tolist()
    if metric == "triplet":
        want = triplet_reference(emb, ids, miner, kw["triplet_margin"])
    else:
        want = contrastive_reference(emb, ids, miner, kw["pos_margin"], kw["neg_margin"], kw["triplet_margin"])
    assert want > 0
    assert got.item() == pytest.approx(want, **({"rel": 1e-3, "abs": 1e-3} if bf16 else {"rel": 1e-5}))


def test_semi_hard_mining_keeps_fewer_triplets_than_all():
    """Guards the brute-force reference itself: the three triplet sets really differ on the test batch."""
    emb, labels = batch(n=12, seed=3)
    d = distances(emb[:, :4])
    ids = labels.tolist()
    counts = {m: len(triplets(ids, d, m, 0.4)) for m in ("none", "batch_hard", "semi_hard")}
    assert counts["none"] > counts["semi_hard"] > 0 and counts["batch_hard"] == 12


def test_objective_adds_weighted_parts():
    emb, labels = batch()
    torch.manual_seed(0)
    params = LossParams(head="cosface", center_weight=0.1, metric="triplet", metric_weight=0.5, miner="batch_hard")
    objective = build_objective(params, DIM, CLASSES)
    total, parts = objective(emb, labels, 0.1)
    assert set(parts) == {"ce", "center", "metric"}
    assert total.item() == pytest.approx(parts["ce"] + 0.1 * parts["center"] + 0.5 * parts["metric"], rel=1e-6)
    assert parts["ce"] == pytest.approx(classification_loss(objective.head(emb, labels), labels, 0.1).item())


def test_head_weight_zero_trains_the_metric_loss_alone():
    emb, labels = batch()
    params = LossParams(head_weight=0.0, metric="triplet", miner="batch_hard", center_weight=0.0)
    objective = build_objective(params, DIM, CLASSES)
    total, parts = objective(emb, labels, 0.1)
    assert parts["ce"] > 0 and total.item() == pytest.approx(parts["metric"], rel=1e-6)
    half = build_objective(params.model_copy(update={"head_weight": 0.5}), DIM, CLASSES)
    half.load_state_dict(objective.state_dict())
    total, parts = half(emb, labels, 0.1)
    assert total.item() == pytest.approx(0.5 * parts["ce"] + parts["metric"], rel=1e-6)


def test_default_objective_is_plain_linear_softmax_and_centre_loss_adds_its_term():
    plain = build_objective(LossParams(), DIM, CLASSES)  # phase 1 of the default two-phase recipe
    emb, labels = batch()
    assert isinstance(plain.head, LinearHead) and plain.center is None and plain.metric is None
    assert set(plain(emb, labels, 0.1)[1]) == {"ce"}
    objective = build_objective(LossParams(center_weight=0.01), DIM, CLASSES)
    assert isinstance(objective, Objective) and isinstance(objective.head, LinearHead)
    assert objective.center is not None and objective.metric is None
    total, parts = objective(emb, labels, 0.1)
    assert set(parts) == {"ce", "center"}
    ce = classification_loss(objective.head.fc(emb), labels, 0.1)
    torch.testing.assert_close(total, ce + 0.01 * objective.center(emb, labels))
    assert [len(g["params"]) for g in objective.param_groups(1e-3)] == [2, 1]  # head; centres at their own lr


# ----- params -----


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"miner": "batch_hard"}, "loss.miner='batch_hard' needs a metric loss"),
        ({"margin_rad": 1.6}, "loss.margin_rad: Input should be less than 1.5707"),
        ({"pos_margin": 0.8, "neg_margin": 0.5}, "loss.neg_margin (0.5) must be above loss.pos_margin (0.8)"),
        ({"m_per_class": 1}, "loss.m_per_class=1 gives batches without positive pairs"),
        ({"head": "arcfase"}, "loss.head: Input should be 'linear'"),
    ],
)
def test_loss_params_are_validated(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params({"loss": raw}, check_model=False)
    assert message in str(err.value)
