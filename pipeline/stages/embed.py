"""Stage `embed@fold`: test-time-augmented embeddings (`embed.flip_tta`, `embed.scales`) of the verification,
classification and training images and the head's class probabilities of the classification images, saved with
their ids (`pipeline.embeddings`).

Launched under torchrun (`torchrun --nproc-per-node N -m pipeline.stages.embed ...`), the ranks share the rows
and rank 0 writes the gathered result, the same as one process writes."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import log, params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--model", type=Path, required=True, help="model.pt of one fold")
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--decoded", type=Path, required=True, help="decoded arrays folder")
    ap.add_argument("--out", type=Path, required=True, help=".npz to write")
    args = ap.parse_args(argv)

    import numpy as np

    from pipeline import distributed
    from pipeline.data import load_array, read_manifest
    from pipeline.device import resolve_device
    from pipeline.embeddings import CLASSIFICATION_SPLITS, LABELLED_SPLITS, VERIFICATION_SPLITS, FoldEmbeddings
    from pipeline.face_model import load_model
    from pipeline.inference import infer_sharded, settings

    p = params_from(args)
    distributed.init_from_env(p.train)  # nothing unless torchrun started several processes
    device = distributed.local_device(resolve_device(p.train.device))
    model, classes = load_model(args.model, device)
    kw = settings(p, device)
    out: dict[str, np.ndarray] = {"classes": np.array(classes, dtype=str)}
    for split in VERIFICATION_SPLITS:
        emb, _ = infer_sharded(model, load_array(args.decoded / f"{split}.npy"), desc=split, probs=False, **kw)
        out[f"{split}_names"] = read_manifest(args.index, split)["name"].to_numpy(dtype=str)
        out[f"{split}_embeddings"] = emb
    for split, id_column in CLASSIFICATION_SPLITS.items():
        emb, probs = infer_sharded(model, load_array(args.decoded / f"{split}.npy"), desc=split, **kw)
        out[f"{split}_ids"] = read_manifest(args.index, split)[id_column].to_numpy(dtype=str)
        out[f"{split}_embeddings"] = emb
        out[f"{split}_probs"] = probs.astype(np.float32)
    for split, id_column in LABELLED_SPLITS.items():  # the training images: embeddings only (probs: N x classes)
        emb, _ = infer_sharded(model, load_array(args.decoded / f"{split}.npy"), desc=split, probs=False, **kw)
        out[f"{split}_ids"] = read_manifest(args.index, split)[id_column].to_numpy(dtype=str)
        out[f"{split}_embeddings"] = emb
    if distributed.is_main():
        FoldEmbeddings(args.out.stem, out).save(args.out)
        log.info("wrote %s", args.out)
    distributed.barrier()


if __name__ == "__main__":
    run(main)
