"""Stage `download`: put the competition in the HW2P2 layout into the raw folder, from `data.source`."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.io import atomic_dir, check_free_space
from pipeline.params import SyntheticParams
from pipeline.stages.common import log, params_from, parser, run, stage

NO_ANSWERS = (
    "Hidden test answers exist only for rendered competitions (data.source synthetic or imagefolder).\n"
    "For this source, score submissions on Kaggle: python -m pipeline submit\n"
)


def synthetic_bytes(s: SyntheticParams) -> int:
    """An upper estimate of the rendered competition on disk: a 4 KiB block per file plus the JPEG itself."""
    images = s.identities * (s.train_images + s.val_images + s.test_images) + s.large_identities * s.train_images
    images += (s.val_verification_identities + s.test_verification_identities) * s.verification_images
    return images * (4096 + s.render_size * s.render_size * 3 // 2) + (s.val_trials + s.test_trials) * 64


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--out", type=Path, required=True, help="competition root to write")
    ap.add_argument("--solution", type=Path, required=True, help="folder for hidden answers (synthetic sources)")
    args = ap.parse_args(argv)
    p = params_from(args)
    source = p.data.source
    log.info("data.source=%s -> %s", source, args.out)
    if source == "synthetic":
        from pipeline.sources.synthetic import render_competition

        check_free_space(args.out, synthetic_bytes(p.synthetic), "the synthetic competition")
        render_competition(args.out, args.solution, p.synthetic, p.layout, p.seed, workers=os.cpu_count() or 1)
        return
    if source == "imagefolder":
        from pipeline.sources.imagefolder import build_competition

        build_competition(Path(p.data.path), args.out, args.solution, p.imagefolder, p.layout)
        return
    if source == "local":
        from pipeline.sources.local import import_local

        import_local(p.data.path, p.layout, args.out)
    else:
        from pipeline.sources.kaggle import download_kaggle

        download_kaggle(p.kaggle, p.layout, args.out)
    with atomic_dir(args.solution) as tmp:
        (tmp / "README.txt").write_text(NO_ANSWERS, encoding="utf-8")


if __name__ == "__main__":
    run(main)
