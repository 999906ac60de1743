"""Stage `decode`: decode every indexed image once into uint8 arrays at `data.image_size` (memory-mapped later)."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--root", type=Path, required=True, help="competition root")
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for <split>.npy arrays")
    args = ap.parse_args(argv)

    from pipeline.data import SPLITS, decode_manifest, read_manifest
    from pipeline.io import check_free_space

    p = params_from(args, check_model=False)  # builds no model
    manifests = {split: read_manifest(args.index, split) for split in SPLITS}
    size = p.data.image_size
    check_free_space(args.out, sum(len(m) for m in manifests.values()) * size * size * 3, "the decoded-image cache")
    for split, manifest in manifests.items():
        decode_manifest(args.root, manifest, p.data.image_size, args.out / f"{split}.npy")


if __name__ == "__main__":
    run(main)
