"""Typed, validated params: `params.yaml` is parsed into these models before any stage does work.

Every section forbids unknown keys; errors name the dotted key (``train.lr``) and, for a typo, the closest
valid name. Defaults here mirror `params.yaml`; each carries a comment giving its unit or intent.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

PARAMS_FILE = Path("params.yaml")

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


def _int_or_auto(low: int, high: int | None = None) -> Any:
    """An integer in [low, high], or the string "auto": one clear message for anything else (pydantic's own union
    error would name each member of the union separately)."""

    def check(value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
            raise ValueError(f"must be {bound} or 'auto'")
        return value

    return Annotated[int | Literal["auto"], BeforeValidator(check)]


def _bool_or_auto(value: Any) -> Any:
    """true, false or the string "auto", with one clear message for anything else."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError("must be true, false or 'auto'")


BoolOrAuto = Annotated[bool | Literal["auto"], BeforeValidator(_bool_or_auto)]


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the key."""


_reads: set[str] | None = None  # dotted keys read since `trace_reads()`; None = not tracing
_ROOT = "."  # the path mark of the whole params (`Params`); sections built on their own have none ("")


def trace_reads() -> set[str]:
    """Start recording which keys are read (leaf fields, or whole sections through `model_dump`) of the params
    loaded by `load_params`/`parse_params`; returns the live set. What a stage reads must be what its dvc.yaml
    `params:` list declares (tests/test_e2e.py runs the real stages with PIPELINE_PARAMS_TRACE set)."""
    global _reads
    _reads = set()
    return _reads


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _path: str = PrivateAttr("")

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _reads is not None and name[:1] != "_" and name in type(self).model_fields:
            if not isinstance(value, Section):  # a section is read through its keys
                _record(self, name)
        return value

    def __eq__(self, other: object) -> bool:  # the same keys and values; where a section sits (`_path`) is no part
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = BaseModel.__hash__

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        if _reads is not None and self._path != _ROOT:  # a dump of everything (a checkpoint's record) is no dependence
            _record(self, None)
        return super().model_dump(**kwargs)


def _record(section: Section, name: str | None) -> None:
    path = section.__pydantic_private__.get("_path", "") if section.__pydantic_private__ else ""
    if path and _reads is not None:
        _reads.add(name if path == _ROOT else path if name is None else f"{path}.{name}")


def _mark_paths(section: Section, path: str) -> None:
    section._path = path
    for key in type(section).model_fields:
        child = BaseModel.__getattribute__(section, key)
        if isinstance(child, Section):
            _mark_paths(child, key if path == _ROOT else f"{path}.{key}")


class DataParams(Section):
    source: Literal["synthetic", "local", "imagefolder", "kaggle"] = "synthetic"  # where the competition comes from
    path: str | None = None  # folder or zip for `local` / `imagefolder` (relative to the repo or absolute)
    # Model input side, px: the decode stage resizes every image to it, whatever size the source wrote
    # (synthetic.render_size, imagefolder.crop_size or the downloaded files).
    image_size: Annotated[int, Field(ge=16, le=512)] = 32
    train_subsets: list[str] = ["medium"]  # folders under layout.train_dir used for training
    on_bad_image: Literal["fail", "skip"] = "fail"  # unreadable images: stop with the list, or skip and report

    @model_validator(mode="after")
    def _path_needed(self) -> DataParams:
        if self.source in ("local", "imagefolder") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if not self.train_subsets:
            raise ValueError("data.train_subsets must name at least one folder")
        return self


class LayoutParams(Section):
    """File and folder names of the HW2P2 layout; the course renamed them between terms."""

    train_dir: str = "train_data"
    val_classification_dir: str = "validation_classification/medium"
    test_classification_dir: str = "test_classification/medium"
    test_order: str = "test_order_classification.txt"
    val_verification_dir: str = "validation_verification"
    val_trials: str = "validation_trials_verification.txt"
    test_verification_dir: str = "test_verification"
    test_trials: str = "test_trials_verification_student.txt"


class SyntheticParams(Section):
    """Size and difficulty of the rendered competition (data.source: synthetic)."""

    identities: PosInt = 200  # classification identities (train_data/medium)
    large_identities: NonNegInt = 50  # extra identities only in train_data/large
    train_images: PosInt = 24  # training images per classification identity
    val_images: PosInt = 3  # validation_classification images per identity
    test_images: PosInt = 3  # test_classification images per identity
    val_verification_identities: Annotated[int, Field(ge=2)] = 60  # unseen identities for validation trials
    test_verification_identities: Annotated[int, Field(ge=2)] = 60  # unseen identities for test trials
    verification_images: Annotated[int, Field(ge=2)] = 8  # images per verification identity
    val_trials: PosInt = 3000  # lines in the validation trial file (half same-identity)
    test_trials: PosInt = 3000  # lines in the test trial file
    render_size: Annotated[int, Field(ge=16, le=256)] = 32  # side of the rendered JPEGs, px (Spring 2019: 32)
    difficulty: Prob = 0.5  # 0 = studio portraits, 1 = harsh pose/light/occlusion
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 90  # upper end of the per-image JPEG quality range


class ImagefolderParams(Section):
    """How an `<identity>/<image>` folder is turned into a competition (data.source: imagefolder)."""

    classification_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.7  # identities used for classification
    val_images: NonNegInt = 2  # per classification identity
    test_images: NonNegInt = 2  # per classification identity
    max_same_pairs: PosInt = 20  # cap of same-identity trials per verification identity
    crop_size: Annotated[int, Field(ge=0, le=1024)] = 64  # side of the written crops, px; 0 keeps the source size
    center_crop: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0  # fraction of the short side kept (LFW 250 px: 0.48)
    seed: NonNegInt = 11785  # split seed, separate from the training seed


class KaggleParams(Section):
    """Competition slugs: the course ran classification and verification as two competitions."""

    classification: str = "11-785-s19-hw2p2-classification"
    verification: str = "11-785-s19-hw2p2-verification"


class FoldsParams(Section):
    # Which labelled images the folds partition. train: each fold model trains on the other folds of the training
    # images and validation_classification is held out from all of them. validation: each fold model trains on
    # every training image plus the validation classification images outside its fold, and its fold measures it
    # (out of fold): more images per identity for each model, which is what small data sets lack.
    holdout: Literal["train", "validation"] = "validation"
    k: Annotated[int, Field(ge=2, le=20)] = 2  # StratifiedKFold splits of the held-out images
    # Folds to train (the dvc.yaml foreach list). One by default: a second model doubles the training time, over the
    # 15-minute budget of a real set at 64 px on 2 CPU cores (README: Real faces); [0, 1] ensembles two.
    train: list[NonNegInt] = [0]

    @model_validator(mode="after")
    def _folds_in_range(self) -> FoldsParams:
        bad = [f for f in self.train if f >= self.k]
        if bad:
            raise ValueError(f"folds.train has {bad}, but folds.k={self.k} allows only 0..{self.k - 1}")
        if len(set(self.train)) != len(self.train):
            raise ValueError("folds.train lists a fold twice")
        if not self.train:
            raise ValueError("folds.train must list at least one fold")
        return self


class AugmentParams(Section):
    """Named scalar knobs; the augment stage turns them into an albumentations pipeline."""

    hflip: Prob = 0.5  # probability of a horizontal flip
    shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.08  # max translation, fraction of the side
    scale: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1  # max zoom in/out, fraction
    rotate: Annotated[float, Field(ge=0.0, le=45.0)] = 10.0  # max rotation, degrees
    affine_p: Prob = 0.7  # probability of the shift/scale/rotate step
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2  # max brightness change, fraction
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2  # max contrast change, fraction
    color_p: Prob = 0.5  # probability of the brightness/contrast step
    hue_shift: Annotated[float, Field(ge=0.0, le=180.0)] = 5.0  # max hue shift, degrees
    saturation: Annotated[float, Field(ge=0.0, le=100.0)] = 15.0  # max saturation shift (albumentations units)
    hsv_p: Prob = 0.3  # probability of the hue/saturation step
    grayscale_p: Prob = 0.05  # probability of converting to grey
    blur_p: Prob = 0.1  # probability of a 3 px Gaussian blur
    erase_p: Prob = 0.2  # probability of erasing one rectangle (coarse dropout)
    erase_size: Annotated[float, Field(gt=0.0, le=0.5)] = 0.25  # erased rectangle side, fraction of the image
    preview_images: Annotated[int, Field(ge=1, le=256)] = 32  # samples in the preview grid


class ModelParams(Section):
    name: str = "resnet18"  # timm model name
    # Reduction of the stem's first two downsampling steps (ResNet: stride-2 conv + max-pool; MobileNet: stem conv +
    # first strided block; VGG: first two pools). 4 is the stock stem, which leaves a 32 px face 1x1 at the last
    # stage; 2 undoes the second step, 1 both.
    stem_stride: Literal[1, 2, 4] = 2
    # How the last feature map becomes one vector: global average, GeM (learnable p), or `flatten` (ArcFace's
    # output layer "E": BN, dropout, then the neck over the whole map pooled to a pool_grid x pool_grid grid, so the
    # embedding keeps where on the face each feature is).
    pool: Literal["avg", "gem", "flatten"] = "flatten"
    # Side of the grid `flatten` pools the last feature map to. auto: the map's own side at data.image_size (2 at
    # 32 px, 4 at 64 px with stem_stride 2); an integer above that side is an error (it would only repeat cells).
    pool_grid: _int_or_auto(1, 16) = "auto"
    width: Annotated[float, Field(gt=0.0, le=4.0)] = 0.5  # channel multiplier where the backbone supports it
    embedding_dim: Annotated[int, Field(ge=8, le=8192)] = 256  # L2-normalised embedding size
    drop_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1  # dropout before the embedding neck
    pretrained: bool = False  # the course bans pretrained weights; true loads timm's hub weights
    pretrained_path: str | None = None  # local weights file, loaded non-strictly into the backbone


class LossParams(Section):
    """Classification head, auxiliary losses and batch sampling (pipeline/losses.py; docs/LOSSES.md)."""

    # linear: plain softmax. normface: scaled cosine. sphereface / cosface / arcface / subcenter_arcface: margin heads.
    head: Literal["linear", "normface", "sphereface", "cosface", "arcface", "subcenter_arcface"] = "linear"
    scale: PosFloat = 30.0  # logit scale s on cosines (normface and margin heads); A-Softmax also multiplies by ||x||
    margin_rad: Annotated[float, Field(ge=0.0, lt=math.pi / 2)] = 0.5  # ArcFace additive angular margin, radians
    margin_cos: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.35  # CosFace additive cosine margin (unitless)
    sphereface_m: Annotated[int, Field(ge=1, le=8)] = 4  # SphereFace multiplicative angular margin m (integer)
    subcenters: Annotated[int, Field(ge=1, le=16)] = 3  # sub-centre ArcFace: centres per class (K)
    center_weight: NonNegFloat = 0.0  # centre loss weight lambda (Wen et al. 2016); 0 = off
    center_lr: PosFloat = 0.01  # learning rate of the class centres under train.optimizer
    head_weight: NonNegFloat = 1.0  # weight of the head's cross-entropy; 0 with a metric loss trains that loss alone
    metric: Literal["none", "contrastive", "triplet"] = "none"  # pair/triplet loss on the embeddings, added to CE
    metric_weight: NonNegFloat = 1.0  # weight of the metric loss
    miner: Literal["none", "batch_hard", "semi_hard"] = "none"  # which pairs/triplets the metric loss sees
    pos_margin: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0  # contrastive: positives pulled within, L2 on unit sphere
    neg_margin: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0  # contrastive: negatives pushed beyond, L2 on unit sphere
    triplet_margin: Annotated[float, Field(ge=0.0, le=2.0)] = 0.2  # triplet loss and semi-hard miner margin, L2
    m_per_class: NonNegInt = 0  # sampler: batches of m images per identity (train.batch_size % m == 0); 0 = off

    @model_validator(mode="after")
    def _consistent(self) -> LossParams:
        if self.miner != "none" and self.metric == "none":
            raise ValueError(f"loss.miner={self.miner!r} needs a metric loss (loss.metric: contrastive or triplet)")
        if self.neg_margin <= self.pos_margin:
            raise ValueError(f"loss.neg_margin ({self.neg_margin}) must be above loss.pos_margin ({self.pos_margin})")
        if self.m_per_class == 1:
            raise ValueError("loss.m_per_class=1 gives batches without positive pairs; use 0 (off) or >= 2")
        if self.head_weight == 0 and self.metric == "none" and self.center_weight == 0:
            raise ValueError("loss.head_weight=0 leaves nothing to train: set loss.metric or loss.center_weight")
        return self


def _optional(section: type[Section], name: str) -> type[Section]:
    """`section` with every key optional (None = not overridden), keeping each key's type and bounds."""
    fields = {}
    for key, info in section.model_fields.items():
        copy = FieldInfo.merge_field_infos(info, default=None)
        fields[key] = (info.annotation | None, copy)
    return create_model(name, __base__=Section, **fields)


LossOverrides = _optional(LossParams, "LossOverrides")


class TrainParams(Section):
    # The training length is one budget. An integer runs exactly that many passes over the fold's training images
    # (train.steps is then not used); auto runs the fewest whole epochs whose optimiser steps reach train.steps, so
    # a small data set (a few hundred images) gets more epochs, not a handful of updates. The stage logs and
    # writes (dvclive/fold<k>/metrics.json: epochs, steps) what ran.
    epochs: _int_or_auto(1) = "auto"
    steps: PosInt = 520  # optimiser-step budget of `epochs: auto`, rounded up to whole epochs (+ finetune.steps)
    batch_size: PosInt = 128  # images per step
    optimizer: str = "adamw"  # any timm.optim.create_optimizer_v2 name
    lr: PosFloat = 3e-3  # peak learning rate after warmup
    min_lr: NonNegFloat = 1e-5  # end of the cosine decay
    warmup_epochs: NonNegFloat = 1.0  # linear warmup, epochs
    weight_decay: NonNegFloat = 0.05  # decoupled weight decay
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1  # cross-entropy target smoothing
    grad_clip: NonNegFloat = 5.0  # max gradient norm; 0 disables
    amp: bool = True  # mixed precision where train.amp_dtype names one for the device (pipeline/device.py)
    # auto: fp16 + GradScaler on CUDA, full precision on CPU (the same numbers on any CPU); bfloat16: bf16 autocast
    # on either (native on CPUs with AVX-512 BF16 or AMX, emulated and many times slower on others, with a warning)
    amp_dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    channels_last: bool = True  # NHWC memory format
    ema: bool = True  # keep an exponential moving average of the weights (timm ModelEmaV3)
    ema_decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.998  # per-step EMA decay
    num_workers: NonNegInt = 1  # DataLoader worker processes
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    eval_every: _int_or_auto(1) = "auto"  # epochs between validation passes; auto: about 12 per phase
    verification_eval: bool = True  # compute validation-trial AUC each eval (cheap at 32 px)
    # Several processes (pipeline/distributed.py): above 1 process in all, the train stage relaunches itself under
    # torchrun with DDP. batch_size stays the global batch; each process gets batch_size / (nproc_per_node * nnodes).
    nproc_per_node: PosInt = 1  # training processes per machine: one per GPU (on CPU, gloo processes)
    nnodes: PosInt = 1  # machines taking part; above 1, every machine runs the stage with the same rendezvous
    node_rank: NonNegInt = 0  # this machine's index, 0..nnodes-1; read by the static rendezvous only
    rdzv_backend: Literal["c10d", "static"] = "c10d"  # torchrun rendezvous: c10d (nodes numbered for you) or static
    rdzv_endpoint: str = "localhost:29500"  # host:port of the rendezvous, on the first machine (nnodes > 1 only)
    rdzv_id: str = "hw2p2"  # job id every machine of one run shares (e.g. the SLURM job id)
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # collective backend; auto: nccl on CUDA, gloo on CPU

    @model_validator(mode="after")
    def _lr_order(self) -> TrainParams:
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) is above train.lr ({self.lr})")
        if self.epochs != "auto" and self.warmup_epochs >= self.epochs:  # auto: checked once the epochs are known
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be below train.epochs ({self.epochs})")
        return self

    @model_validator(mode="after")
    def _distributed(self) -> TrainParams:
        world = self.nproc_per_node * self.nnodes
        if self.batch_size % world:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) is the global batch and must divide evenly over "
                f"nproc_per_node x nnodes = {world} processes"
            )
        if self.node_rank >= self.nnodes:
            raise ValueError(f"train.node_rank ({self.node_rank}) must be below train.nnodes ({self.nnodes})")
        host, _, port = self.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"train.rdzv_endpoint must be host:port, got {self.rdzv_endpoint!r}")
        if self.device == "cpu" and self.backend == "nccl":
            raise ValueError("train.backend 'nccl' needs CUDA but train.device is 'cpu': use gloo or auto")
        if self.device == "cpu" and self.sync_bn and world > 1:
            raise ValueError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel) but train.device is 'cpu'")
        return self


class FinetuneParams(Section):
    """Phase 2 of the seed's transfer recipe: after phase 1 (`train`, `loss`) has trained the N-way classifier,
    fine-tune that network from its weights with another loss (a metric loss or a margin head)."""

    # Phase-2 length, as train.epochs: an integer runs exactly that many epochs, auto the fewest whole epochs
    # reaching finetune.steps; 0 = no phase 2.
    epochs: _int_or_auto(0) = "auto"
    steps: PosInt = 120  # optimiser-step budget of `epochs: auto`
    lr: PosFloat = 3e-4  # peak learning rate of phase 2 (cosine decay to train.min_lr)
    warmup_epochs: NonNegFloat = 0.0  # linear warmup of phase 2, epochs
    # Keys of `loss` to change for phase 2, e.g. {metric: triplet, miner: semi_hard, m_per_class: 4}; the rest of
    # `loss` carries over. A head of another kind (or size) starts fresh; the same kind continues from phase 1.
    loss: LossOverrides = LossOverrides(metric="triplet", miner="semi_hard", m_per_class=4, head_weight=0.0)

    @model_validator(mode="after")
    def _warmup(self) -> FinetuneParams:
        if self.epochs not in (0, "auto") and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"finetune.warmup_epochs ({self.warmup_epochs}) must be below finetune.epochs ({self.epochs})"
            )
        return self


class SourceParams(Section):
    """The source model (stage `source`, pipeline/source_model.py): a backbone pretrained on rendered synthetic faces
    of many identities, which every fold model then starts from. Its own seed, image size and budget, so that
    experiments on `data`, `seed`, `train` or `loss` reuse the committed (or cached) source model instead of
    retraining it."""

    identities: NonNegInt = 1000  # identities rendered for the source task; 0 = no source model (fold models fresh)
    # Side of the rendered source faces, px: the size the source model trains at, its own key (not data.image_size)
    # so that the committed source model serves every data.image_size: the fold models load only its convolutions,
    # which take any input size (README: Real faces).
    image_size: Annotated[int, Field(ge=16, le=512)] = 64
    images_per_identity: Annotated[int, Field(ge=2)] = 24  # rendered faces per identity
    difficulty: Prob = 0.5  # as synthetic.difficulty: 0 = studio portraits, 1 = harsh pose/light/occlusion
    steps: PosInt = 800  # optimiser-step budget, rounded up to whole epochs (as train.steps with epochs: auto)
    lr: PosFloat = 3e-3  # peak learning rate
    batch_size: PosInt = 128  # images per step
    seed: NonNegInt = 0  # rendering and training seed of the source model (not the top-level seed)


class EmbedParams(Section):
    batch_size: PosInt = 512  # images per forward pass
    flip_tta: bool = True  # sum of original and mirrored embeddings, then L2-normalise
    # Scale TTA: extra views zoomed about the centre by each factor (> 1 crops, < 1 shrinks inside a black border,
    # as augment.scale does in training), each mirrored too with flip_tta; the embedding sums them all. [] = off;
    # each view is one more forward pass (README: Real faces).
    scales: list[Annotated[float, Field(ge=0.5, le=2.0)]] = []
    amp: bool = True  # bf16/fp16 autocast for extraction (bench: 2x faster on CPU, AUC within 1e-5 of fp32)

    @model_validator(mode="after")
    def _scales(self) -> EmbedParams:
        if 1.0 in self.scales or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"embed.scales {self.scales}: list each extra zoom once (1.0, the original, is always in)")
        return self


class ScoreParams(Section):
    # Trial score: cosine, or negative Euclidean distance. The embeddings are unit length, so the two rank trials
    # alike until query expansion, whose weighted means the distance compares with their lengths (README).
    metric: Literal["cosine", "euclidean"] = "euclidean"
    center: bool = False  # cosine of embeddings minus the mean embedding of the images scored (no labels used)
    # alpha-QE before scoring: each embedding becomes the weighted mean of itself and its k nearest (cosine) among
    # the images of its trial file, weights cosine^qe_alpha, 0 = the plain mean (pipeline/scoring.py; no labels
    # used). query_expansion: 0 = off.
    query_expansion: Annotated[int, Field(ge=0, le=100)] = 5
    qe_alpha: Annotated[float, Field(ge=0.0, le=20.0)] = 1.0
    # How folds are combined: the cosine/distance of the mean L2-normalised embedding, or the mean of each fold's
    # scores z-normalised over the trials (each fold expanded and scored in its own embedding space).
    ensemble: Literal["mean_embedding", "mean_score"] = "mean_score"
    # Within-class whitening before centring and expansion (pipeline/scoring.py; README: Real faces): each fold's
    # embeddings times the inverse square root of the within-identity covariance of its labelled images (training
    # and validation classification images; no trial's label), that covariance shrunk by whiten_shrinkage towards
    # a multiple of the identity matrix (1 = no whitening), then L2-normalised again.
    whiten: bool = True
    whiten_shrinkage: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    far: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3  # false-accept rate for TAR@FAR

    def scoring_args(self) -> dict:
        """The keyword arguments of `scoring.verification_scores` these params set (all but `whitening`, a matrix
        `pipeline.ensemble.Whitenings` fits from the embeddings when `whiten` asks for it)."""
        return {"metric": self.metric, "center": self.center, "expand": self.query_expansion, "alpha": self.qe_alpha}


class ClassifyParams(Section):
    # Which probabilities name a classification image's identity (pipeline/classify.py; README: Real faces): the
    # softmax head's, the nearest class prototype's (cosine to each identity's mean labelled embedding), or
    # prototype_weight of the prototype's plus the rest of the head's.
    method: Literal["head", "prototype", "mixed"] = "prototype"
    temperature: Annotated[float, Field(gt=0.0, le=10.0)] = 0.05  # cosine / temperature before the softmax
    prototype_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # mixed only
    # Steps moving each prototype towards the images it claims (weights = their probabilities; no labels read).
    refine_steps: Annotated[int, Field(ge=0, le=20)] = 0
    # Rescale the probabilities of the images classified together so that every identity claims the same share
    # (Sinkhorn), as when each identity has the same number of test images. auto: when the validation
    # classification images have the same number per identity (the test split is built like it).
    balance: BoolOrAuto = "auto"


class AnalysisParams(Section):
    """The error-analysis pictures the `analyse` stage draws from the ensemble's validation outputs (README: Where
    the model fails); none of these keys re-runs training, embedding or scoring."""

    gallery_pairs: Annotated[int, Field(ge=1, le=50)] = 8  # worst false accepts drawn, and as many false rejects
    confused_pairs: Annotated[int, Field(ge=0, le=50)] = 6  # most confused identity pairs drawn; 0 = none
    images_per_identity: Annotated[int, Field(ge=1, le=12)] = 3  # training images shown of each confused identity


class SubmissionParams(Section):
    classification_header: tuple[str, str] = ("id", "label")  # Spring 2020 used Id,Category
    verification_header: tuple[str, str] = ("trial", "score")
    classification_id: Literal["stem", "name"] = "stem"  # id as file name without extension, or as listed


class Params(Section):
    seed: NonNegInt = 0  # global seed: rendering, folds, initialisation, data order
    data: DataParams = DataParams()
    layout: LayoutParams = LayoutParams()
    synthetic: SyntheticParams = SyntheticParams()
    imagefolder: ImagefolderParams = ImagefolderParams()
    kaggle: KaggleParams = KaggleParams()
    folds: FoldsParams = FoldsParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    finetune: FinetuneParams = FinetuneParams()
    source: SourceParams = SourceParams()
    embed: EmbedParams = EmbedParams()
    score: ScoreParams = ScoreParams()
    classify: ClassifyParams = ClassifyParams()
    submission: SubmissionParams = SubmissionParams()
    analysis: AnalysisParams = AnalysisParams()

    @model_validator(mode="after")
    def _one_start(self) -> Params:
        if self.source.identities and (self.model.pretrained or self.model.pretrained_path):
            key = "model.pretrained" if self.model.pretrained else "model.pretrained_path"
            raise ValueError(
                f"source.identities ({self.source.identities}) and {key} both give the fold models their starting "
                "weights: set source.identities to 0, or unset " + key
            )
        return self

    @model_validator(mode="after")
    def _finetune_loss(self) -> Params:
        try:
            finetune_loss(self)
        except ValidationError as err:
            raise ValueError(
                "; ".join(f"finetune.loss: {e['msg'].removeprefix('Value error, ')}" for e in err.errors())
            ) from None
        return self


def finetune_loss(p: Params) -> LossParams:
    """The phase-2 loss: `loss` with `finetune.loss`'s keys replaced."""
    return LossParams(**{**p.loss.model_dump(), **p.finetune.loss.model_dump(exclude_none=True)})


def finetune_params(p: Params) -> Params:
    """The params phase 2 trains under: its loss, epochs, step budget, learning rate and warmup."""
    train = p.train.model_copy(
        update={
            "epochs": p.finetune.epochs,
            "lr": p.finetune.lr,
            "warmup_epochs": p.finetune.warmup_epochs,
            "steps": p.finetune.steps,
            "min_lr": min(p.train.min_lr, p.finetune.lr),
        }
    )
    return p.model_copy(update={"train": train, "loss": finetune_loss(p)})


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model that owns the key at `loc`, to suggest close names for a typo."""
    model: type[BaseModel] | None = Params
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p != "__root__")
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            owner = _model_for(loc)
            names = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = "unknown key" + (f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else "")
            if names:
                msg += f" (valid: {', '.join(names)})"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"  # a section's own checks name their keys and values themselves
        lines.append(f"{source}: {msg}" if not loc and msg.startswith("finetune.") else f"{source}: {key}: {msg}")
    return "\n".join(lines)


TV_PREFIX = "tv/"  # model.name prefix for torchvision architectures timm lacks
TV_MODELS = ("alexnet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "squeezenet1_1")


def known_model_names() -> list[str]:
    import timm  # imports torch: only when a params file is checked

    return timm.list_models() + [TV_PREFIX + n for n in TV_MODELS]


def check_model_name(name: str) -> None:
    """Refuse a model name neither timm nor the torchvision fallback knows, suggesting the closest."""
    names = known_model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ParamsError(f"model.name: unknown model {name!r}{hint}")


# Keys that were renamed: a params file still using the old name gets an error naming the new one.
RENAMED = {
    "train.min_steps": "train.steps (the step budget of train.epochs: auto; an integer train.epochs runs exactly "
    "that many epochs)",
    "finetune.min_steps": "finetune.steps (the step budget of finetune.epochs: auto)",
    "synthetic.image_size": "synthetic.render_size (the side of the rendered JPEGs; data.image_size is the model "
    "input)",
    "imagefolder.image_size": "imagefolder.crop_size (the side of the written crops; data.image_size is the model "
    "input)",
}


def renamed_keys(raw: dict, source: str) -> list[str]:
    """Messages for old key names in `raw`."""
    out = []
    for old, new in RENAMED.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            out.append(f"{source}: {old}: renamed; use {new}")
    return out


def parse_params(raw: Any, source: str = str(PARAMS_FILE), check_model: bool = True) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    old = renamed_keys(raw, source)
    if old:
        raise ParamsError("\n".join(old))
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_errors(err, source)) from None
    if check_model:
        check_model_name(params.model.name)
    _mark_paths(params, _ROOT)  # from here on, reads are traced (validation is not a stage reading a key)
    return params


def load_params(path: str | Path = PARAMS_FILE, check_model: bool = True) -> Params:
    """Read and validate a params file.

    Raises:
        ParamsError: naming the file and the dotted key of every problem found.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, str(path), check_model)
