"""Stage `train@fold`: train one model on every fold but `--fold` (phase 1, then the optional phase-2 fine-tune);
checkpoint each epoch and resume."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.fingerprint import fingerprint
from pipeline.paths import SOURCE_BACKBONE
from pipeline.stages.common import log, params_from, parser, run, stage

if TYPE_CHECKING:
    import numpy as np

    from pipeline.folds import LabelledImages
    from pipeline.monitor import EvalSets
    from pipeline.stacked_images import StackedImages


def training_sets(
    labelled: LabelledImages, decoded: Path, index: Path, fold: int
) -> tuple[np.ndarray | StackedImages, np.ndarray, np.ndarray, EvalSets]:
    """What fold `fold` trains on (images, rows, class index of every row of the images) and is measured on."""
    import numpy as np

    from pipeline.data import load_array, read_manifest
    from pipeline.monitor import EvalSets
    from pipeline.stacked_images import StackedImages
    from pipeline.trial_files import read_trial_manifest

    in_fold = labelled.fold_ids == fold
    train_images = load_array(decoded / "train.npy")
    val_images = load_array(decoded / "val_classification.npy")
    ver = dict(
        ver_images=load_array(decoded / "val_verification.npy"),
        ver_names=read_manifest(index, "val_verification")["name"].tolist(),
        trials=read_trial_manifest(index, "val_trials"),
    )
    labels, val_labels = labelled.train_labels, labelled.val_labels
    if labelled.holdout == "train":  # train on the other folds; validation_classification is held out from all
        held = np.flatnonzero(in_fold)
        sets = EvalSets(val_images, val_labels, train_images[held], labels[held], **ver)
        return train_images, np.flatnonzero(~in_fold), labels, sets
    # every training image and the validation images outside this fold; the fold's images measure it
    rows = np.concatenate([np.arange(len(train_images)), len(train_images) + np.flatnonzero(~in_fold)])
    sets = EvalSets(val_images[in_fold], val_labels[in_fold], **ver)
    return StackedImages(train_images, val_images), rows, np.concatenate([labels, val_labels]), sets


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--decoded", type=Path, required=True, help="decoded arrays folder")
    ap.add_argument("--folds", type=Path, required=True, help="folds CSV")
    ap.add_argument("--transform", type=Path, required=True, help="serialised augmentation")
    ap.add_argument("--out", type=Path, required=True, help="model folder (checkpoint.pt, model.pt)")
    ap.add_argument("--live", type=Path, required=True, help="dvclive folder")
    ap.add_argument("--source", type=Path, help="source model folder: start from its backbone.pt when it holds one")
    args = ap.parse_args(argv)

    # Here, not at the top, so that `--help` answers without loading torch. `fingerprint` hashes every pipeline
    # module loaded when it runs: these, and those `training_sets` loads, as when they were module-level imports.
    from pipeline import augment, distributed
    from pipeline.engine import TrainData, TrainingInterrupted, train
    from pipeline.face_model import save_model
    from pipeline.folds import load_labelled
    from pipeline.models import resolve_pool_grid
    from pipeline.params import finetune_params

    p = params_from(args)
    source = args.source / SOURCE_BACKBONE if args.source else None
    if source is not None and source.exists():  # stage `source` wrote it (source.identities > 0)
        p = p.model_copy(update={"model": p.model.model_copy(update={"pretrained_path": str(source)})})
    if distributed.relaunch(p.train, "pipeline.stages.train", sys.argv[1:] if argv is None else argv):
        return  # torchrun ran the stage in train.nproc_per_node x train.nnodes processes
    p = p.model_copy(update={"model": resolve_pool_grid(p.model, p.data.image_size)})  # a params error, before work
    distributed.init_from_env(p.train)

    labelled = load_labelled(args.index, args.folds, p.folds.holdout)
    if not (labelled.fold_ids == args.fold).any():  # folds.train is dvc.yaml's foreach, not a key this stage reads
        raise ValueError(f"--fold {args.fold}: {args.folds} holds no image in fold {args.fold}")
    images, rows, labels, eval_sets = training_sets(labelled, args.decoded, args.index, args.fold)
    data = TrainData(images, rows, labels[rows], len(labelled.classes), augment.load(args.transform))
    seed = p.seed * 1000 + args.fold
    inputs = [args.index / "train.csv", args.index / "val_classification.csv", args.folds, args.transform]
    if p.model.pretrained_path:  # other starting weights under the same path must not resume this checkpoint
        inputs.append(Path(p.model.pretrained_path))
    fp = fingerprint(p, args.fold, inputs)
    log.info(
        "fold %d: %d training images, %d %s images held out, %d classes",
        args.fold,
        len(rows),
        int((labelled.fold_ids == args.fold).sum()),
        labelled.held_manifest,
        len(labelled.classes),
    )

    from dvclive import Live

    main_rank = distributed.is_main()  # rank 0 alone writes metrics and the model
    with Live(str(args.live), save_dvc_exp=False, dvcyaml=None) if main_rank else contextlib.nullcontext() as live:

        def log_metrics(row: dict[str, float]) -> None:
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        model, budget = train(p, data, eval_sets, args.out, seed, fp, log_metrics)
        done = args.out / "checkpoint.pt"  # the checkpoint of the last finished phase
        try:
            ran = {"epochs": budget.epochs, "steps": budget.steps}
            final_params = p
            if p.finetune.epochs:  # phase 2: the same network, fine-tuned with the phase-2 loss from its weights
                final_params = finetune_params(p)
                loss = p.finetune.loss.model_dump(exclude_none=True)
                log.info("fold %d: phase 2 at lr %g with the loss %s", args.fold, p.finetune.lr, loss)
                fp2 = fingerprint(final_params, args.fold, inputs, parent=fp)
                out2 = args.out / "finetune"
                model, budget = train(
                    final_params, data, eval_sets, out2, seed + 1, fp2, log_metrics, init=model, prefix="finetune"
                )
                done = out2 / "checkpoint.pt"
                ran.update(finetune_epochs=budget.epochs, finetune_steps=budget.steps)
            if main_rank:
                live.summary.update(ran)  # what ran, next to the last epoch's figures in metrics.json
                live.make_summary()
                save_model(model, final_params, labelled.classes, args.out / "model.pt")
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # between the phases, or while the model is saved
            raise TrainingInterrupted(
                f"interrupted after a finished phase: {done} holds all of its epochs; "
                "run dvc repro (or make repro) again to resume from it"
            ) from None
    distributed.barrier()


if __name__ == "__main__":
    run(main)
