"""Stage `augment`: build the albumentations pipeline from params, save it for training, render a preview grid."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--images", type=Path, required=True, help="decoded training images (.npy)")
    ap.add_argument("--out", type=Path, required=True, help="serialised transform (.json)")
    ap.add_argument("--preview", type=Path, required=True, help="preview grid (.png)")
    args = ap.parse_args(argv)

    from pipeline import augment
    from pipeline.data import load_array

    p = params_from(args, check_model=False)  # builds no model
    transform = augment.build(p.augment)
    augment.save(transform, args.out)
    augment.preview_grid(
        load_array(args.images), augment.load(args.out), p.augment.preview_images, p.seed, args.preview
    )


if __name__ == "__main__":
    run(main)
