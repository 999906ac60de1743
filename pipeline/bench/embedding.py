"""Benchmark 4, embedding extraction: images/s of `pipeline.inference.infer` (inference_mode, channels_last,
`embed.batch_size`, flip TTA as in params) in fp32 and in low precision, and the validation AUC each gives.

The baseline is the plain loop (`torch.no_grad`, NCHW, fp32, same batch). Low precision is bf16 on CPU (and
fp16 and bf16 on CUDA); it is worth `embed.amp: true` where it is faster and its AUC stays within 0.002 of fp32.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from pipeline import metrics
from pipeline.bench.common import Context, best_of, make_model, maybe_compile
from pipeline.bench.report import Row
from pipeline.device import dtype_name
from pipeline.face_model import FaceModel
from pipeline.inference import infer
from pipeline.models import l2_normalise
from pipeline.scoring import trial_scores
from pipeline.trial_files import read_trial_manifest

log = logging.getLogger(__name__)

AUC_TOLERANCE = 0.002


def plain_embed(model: FaceModel, images: np.ndarray, device: torch.device, batch: int, flip: bool) -> np.ndarray:
    """How a student extracts embeddings: no_grad, NCHW float32 batches, flip TTA summed then normalised."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.array(images[start : start + batch])).to(device).permute(0, 3, 1, 2).float()
            x = x.contiguous()
            e = model.net(x).float()
            if flip:
                e = e + model.net(torch.flip(x, dims=[3])).float()
            out.append(l2_normalise(e).cpu().numpy())
    return np.concatenate(out)


def run(ctx: Context) -> list[Row]:
    data, ep = ctx.data, ctx.params.embed
    images = data.array("val_verification")
    names = data.manifest("val_verification")["name"].tolist()
    trials = read_trial_manifest(data.index, "val_trials")
    trained = "trained_model" in ctx.shared
    if trained:
        model = ctx.shared["trained_model"]
    else:
        model = make_model(ctx, data.labels()[1])
    plain_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    model = maybe_compile(ctx, model)
    kw = dict(
        device=ctx.device, batch_size=ep.batch_size, flip_tta=ep.flip_tta, channels_last=ctx.params.train.channels_last
    )
    low = [torch.bfloat16] if ctx.device.type == "cpu" else [torch.float16, torch.bfloat16]
    rates, aucs = {}, {}
    for dtype in [None, *low]:
        infer(model, images[: ep.batch_size], dtype=dtype, **kw)  # warm-up (and compilation)
        seconds, (emb, _) = best_of(lambda d=dtype: infer(model, images, dtype=d, **kw), ctx.repeats, ctx.device)
        rates[dtype] = len(images) / seconds
        aucs[dtype] = metrics.roc_auc(trials["label"].to_numpy(), trial_scores(emb, names, trials))
    plain_embed(plain_model, images[: ep.batch_size], ctx.device, ep.batch_size, ep.flip_tta)
    plain_seconds, _ = best_of(
        lambda: plain_embed(plain_model, images, ctx.device, ep.batch_size, ep.flip_tta), ctx.repeats, ctx.device
    )
    plain = len(images) / plain_seconds
    which = "the EMA model from the training benchmark" if trained else "an untrained model (run with training)"
    tta = " with flip TTA (2 forward passes per image)" if ep.flip_tta else ""
    rows = [
        Row(
            "embedding",
            f"infer fp32 (inference_mode, channels_last, batch {ep.batch_size})",
            rates[None],
            "img/s",
            plain,
            "plain no_grad NCHW loop",
            rates[None] / plain,
            "report",
            None,
            f"{len(images):,} validation verification images{tta}, best of {ctx.repeats}",
        )
    ]
    for dtype in low:
        faster = rates[dtype] > rates[None]
        rows.append(
            Row(
                "embedding",
                f"infer {dtype_name(dtype)} autocast",
                rates[dtype],
                "img/s",
                rates[None],
                "infer fp32",
                rates[dtype] / rates[None],
                "report (embed.amp where > 1x)",
                None,
                f"{'faster: set embed.amp: true' if faster else 'not faster here: keep embed.amp: false'}"
                + (
                    f" (embed.amp uses {dtype_name(dtype)} only with train.amp_dtype set to it)" if len(low) > 1 else ""
                ),
            )
        )
        diff = abs(aucs[dtype] - aucs[None])
        rows.append(
            Row(
                "embedding",
                f"validation AUC |{dtype_name(dtype)} - fp32|",
                diff,
                "",
                aucs[None],
                "fp32 AUC",
                None,
                f"< {AUC_TOLERANCE}",
                diff < AUC_TOLERANCE,
                f"{len(trials):,} validation trials scored with {which}",
            )
        )
    return rows
