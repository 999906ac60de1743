"""Stage `folds`: stratified K-fold assignment of the held-out images (training or validation classification,
by `folds.holdout`) -> folds/folds.csv."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import log, params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    args = ap.parse_args(argv)

    from pipeline.data import read_manifest
    from pipeline.folds import assign_folds
    from pipeline.io import atomic_path

    p = params_from(args, check_model=False)  # builds no model
    if p.folds.holdout == "train":
        folds = assign_folds(read_manifest(args.index, "train"), p.folds.k, p.seed)
    else:
        val = read_manifest(args.index, "val_classification")
        if val.empty:
            raise ValueError(
                f"folds.holdout is 'validation' but {args.index / 'val_classification.csv'} lists no images: "
                "use folds.holdout: train"
            )
        folds = assign_folds(val, p.folds.k, p.seed, what="validation classification images")
    with atomic_path(args.out) as tmp:
        folds.to_csv(tmp, index=False)
    log.info("%d images in %d folds: %s", len(folds), p.folds.k, folds["fold"].value_counts().sort_index().tolist())


if __name__ == "__main__":
    run(main)
