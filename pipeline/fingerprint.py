"""What a model's weights depend on, as one hash: a checkpoint resumes only under the same one (the train stage's
folds, the source stage's model)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from pipeline.params import Params

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
    from pipeline.io import sha256_file

    train = {k: v for k, v in p.train.model_dump(mode="json").items() if k not in NON_RESULT_KEYS}
    data = {"image_size": p.data.image_size}
    spec = {"seed": p.seed, "fold": fold, "model": p.model.model_dump(mode="json"), "train": train, "data": data}
    spec["loss"] = p.loss.model_dump(mode="json")
    code = sorted(m.__file__ for name, m in sys.modules.items() if name.startswith("pipeline") and m.__file__)
    spec["files"] = [sha256_file(f) for f in inputs]
    spec["code"] = [sha256_file(f) for f in code]
    spec["parent"] = parent
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
