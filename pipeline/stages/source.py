"""Stage `source`: pretrain the backbone on rendered synthetic faces of `source.identities` identities, the source
task the fold models start from (`backbone.pt`); with `source.identities: 0`, write only `source.json` saying there
is none. Checkpoints each epoch and resumes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.paths import SOURCE_BACKBONE as BACKBONE
from pipeline.stages.common import log, params_from, parser, run, stage

SUMMARY = "source.json"
CHECKPOINT = "checkpoint.pt"  # pipeline.engine's resume state, for an interrupted run only


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--out", type=Path, required=True, help="source model folder (backbone.pt, source.json)")
    args = ap.parse_args(argv)

    from pipeline.io import write_json
    from pipeline.params import check_model_name

    p = params_from(args, check_model=False)  # off, the stage builds no model: its check waits for the on path
    s = p.source
    args.out.mkdir(parents=True, exist_ok=True)
    if not s.identities:
        for stale in (BACKBONE, CHECKPOINT):  # the folder persists (for resuming), a switched-off source not
            (args.out / stale).unlink(missing_ok=True)
        write_json(args.out / SUMMARY, {"identities": 0, "note": "no source model: the fold models start fresh"})
        log.info("source.identities is 0: no source model")
        return
    check_model_name(p.model.name)

    import numpy as np
    import torch

    from pipeline import augment
    from pipeline.engine import TrainData, train
    from pipeline.fingerprint import fingerprint
    from pipeline.io import atomic_path
    from pipeline.monitor import EvalSets
    from pipeline.params import AugmentParams
    from pipeline.source_model import render_source_set, source_params

    sp = source_params(p)
    started = time.monotonic()
    images, labels = render_source_set(s, s.image_size, workers=min(8, os.cpu_count() or 1))
    # the last face of each identity measures the source task (accuracy of its head) after each epoch
    held = np.arange(s.images_per_identity - 1, len(labels), s.images_per_identity)
    rows = np.setdiff1d(np.arange(len(labels)), held)
    data = TrainData(images, rows, labels[rows], s.identities, augment.build(AugmentParams()))
    sets = EvalSets(val_images=images[held], val_labels=labels[held])
    log.info("source: %d identities x %d faces of %d px", s.identities, s.images_per_identity, s.image_size)
    history: list[dict[str, float]] = []
    model, budget = train(sp, data, sets, args.out, s.seed, fingerprint(sp, -1, []), history.append)
    with atomic_path(args.out / BACKBONE) as tmp:
        torch.save(model.net.backbone.state_dict(), tmp)
    summary = {
        "identities": s.identities,
        "images": len(rows),
        "image_size": s.image_size,
        "epochs": budget.epochs,
        "steps": budget.steps,
        "val_accuracy": history[-1].get("val_accuracy") if history else None,
        "history": history,
    }
    write_json(args.out / SUMMARY, summary)
    # The folder is committed (backbone.pt and source.json, so that a fresh clone skips this stage); the resume
    # checkpoint is 5x the backbone's size with the head and optimiser state.
    (args.out / CHECKPOINT).unlink(missing_ok=True)
    log.info(
        "source model: %s (held-out accuracy %s) in %.1f min",
        args.out / BACKBONE,
        summary["val_accuracy"],
        (time.monotonic() - started) / 60,
    )


if __name__ == "__main__":
    run(main)
