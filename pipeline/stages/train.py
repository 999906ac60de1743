"""Stage `train@fold`: train one model on every fold but `--fold` (phase 1, then the optional phase-2 fine-tune);
checkpoint each epoch and resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import augment, distributed
from pipeline.data import load_array, read_manifest
from pipeline.engine import EvalSets, save_model, train
from pipeline.folds import read_fold_ids
from pipeline.io import sha256_file
from pipeline.params import Params, finetune_params
from pipeline.pool import StackedImages
from pipeline.scoring import read_trial_manifest
from pipeline.stages.common import log, params_from, parser, run, stage

# Params that do not change the trained weights, so a checkpoint written under other values still resumes.
# The launch settings are here too: the global batch, data order, augmentation and schedule do not depend on the
# number of processes, so a checkpoint resumes on another world size. What does change with it, like `device`, is
# numerical: BatchNorm statistics come from each process's share of the batch (unless sync_bn, which stays a result
# key), and gradients are summed in another order.
NON_RESULT_KEYS = (
    "num_workers",
    "eval_every",
    "verification_eval",
    "device",
    "nproc_per_node",
    "nnodes",
    "node_rank",
    "rdzv_backend",
    "rdzv_endpoint",
    "rdzv_id",
    "backend",
)


def fingerprint(p: Params, fold: int, inputs: list[Path], parent: str = "") -> str:
    """What the weights depend on: the relevant params, the input files and the pipeline code in use (and, for
    phase 2, the phase-1 fingerprint as `parent`).

    A checkpoint resumes only when this matches, so an edited engine or loss never continues stale weights.
    """
    train = {k: v for k, v in p.train.model_dump(mode="json").items() if k not in NON_RESULT_KEYS}
    data = {"image_size": p.data.image_size}
    spec = {"seed": p.seed, "fold": fold, "model": p.model.model_dump(mode="json"), "train": train, "data": data}
    spec["loss"] = p.loss.model_dump(mode="json")
    code = sorted(m.__file__ for name, m in sys.modules.items() if name.startswith("pipeline") and m.__file__)
    spec["files"] = [sha256_file(f) for f in inputs]
    spec["code"] = [sha256_file(f) for f in code]
    spec["parent"] = parent
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--decoded", type=Path, required=True, help="decoded arrays folder")
    ap.add_argument("--folds", type=Path, required=True, help="folds CSV")
    ap.add_argument("--transform", type=Path, required=True, help="serialised augmentation")
    ap.add_argument("--out", type=Path, required=True, help="model folder (checkpoint.pt, model.pt)")
    ap.add_argument("--live", type=Path, required=True, help="dvclive folder")
    args = ap.parse_args(argv)
    p = params_from(args)
    if distributed.relaunch(p.train, "pipeline.stages.train", sys.argv[1:] if argv is None else argv):
        return  # torchrun ran the stage in train.nproc_per_node x train.nnodes processes
    distributed.init_from_env(p.train)
    if args.fold not in p.folds.train:
        raise ValueError(f"--fold {args.fold} is not in folds.train {p.folds.train}")

    classes = read_manifest(args.index, "classes")["identity"].tolist()
    class_of = {name: i for i, name in enumerate(classes)}
    train_manifest = read_manifest(args.index, "train")
    val_manifest = read_manifest(args.index, "val_classification")
    ver_manifest = read_manifest(args.index, "val_verification")
    held_out = "train" if p.folds.holdout == "train" else "val_classification"
    held_manifest = train_manifest if held_out == "train" else val_manifest
    fold_ids = read_fold_ids(args.folds, held_manifest, str(args.index / f"{held_out}.csv"), p.folds.holdout)
    in_fold = fold_ids == args.fold
    labels = train_manifest["identity"].map(class_of).to_numpy()
    val_labels = val_manifest["identity"].map(class_of).to_numpy()
    train_images = load_array(args.decoded / "train.npy")
    val_images = load_array(args.decoded / "val_classification.npy")
    ver = dict(
        ver_images=load_array(args.decoded / "val_verification.npy"),
        ver_names=ver_manifest["name"].tolist(),
        trials=read_trial_manifest(args.index, "val_trials"),
    )
    if p.folds.holdout == "train":  # train on the other folds; validation_classification is held out from all
        images, rows, held = train_images, np.flatnonzero(~in_fold), np.flatnonzero(in_fold)
        eval_sets = EvalSets(val_images, val_labels, train_images[held], labels[held], **ver)
    else:  # every training image and the validation images outside this fold; the fold's images measure it
        images = StackedImages(train_images, val_images)
        held = np.flatnonzero(in_fold)
        rows = np.concatenate([np.arange(len(train_images)), len(train_images) + np.flatnonzero(~in_fold)])
        labels = np.concatenate([labels, val_labels])
        eval_sets = EvalSets(val_images[held], val_labels[held], **ver)
    seed = p.seed * 1000 + args.fold
    inputs = [args.index / "train.csv", args.index / "val_classification.csv", args.folds, args.transform]
    fp = fingerprint(p, args.fold, inputs)
    log.info(
        "fold %d: %d training images, %d %s images held out, %d classes",
        args.fold,
        len(rows),
        len(held),
        held_out,
        len(classes),
    )

    from dvclive import Live

    main_rank = distributed.is_main()  # rank 0 alone writes metrics and the model
    with Live(str(args.live), save_dvc_exp=False, dvcyaml=None) if main_rank else contextlib.nullcontext() as live:

        def log_metrics(row: dict[str, float]) -> None:
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        transform = augment.load(args.transform)
        model = train(
            p, images, rows, labels[rows], len(classes), transform, eval_sets, args.out, seed, fp, log_metrics
        )
        if p.finetune.epochs:  # phase 2: the same network, fine-tuned with the phase-2 loss from its weights
            p2 = finetune_params(p)
            log.info(
                "fold %d: phase 2, %d epochs at lr %g with the loss %s",
                args.fold,
                p2.train.epochs,
                p2.train.lr,
                p.finetune.loss.model_dump(exclude_none=True),
            )
            fp2 = fingerprint(p2, args.fold, inputs, parent=fp)
            out2 = args.out / "finetune"
            model = train(
                p2,
                images,
                rows,
                labels[rows],
                len(classes),
                transform,
                eval_sets,
                out2,
                seed + 1,
                fp2,
                log_metrics,
                init=model,
            )
    if main_rank:
        save_model(model, finetune_params(p) if p.finetune.epochs else p, classes, args.out / "model.pt")
    distributed.barrier()


if __name__ == "__main__":
    run(main)
