"""Stage `index`: validate the competition layout and every image, and write the manifests."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import log, params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--root", type=Path, required=True, help="competition root (HW2P2 layout)")
    ap.add_argument("--out", type=Path, required=True, help="manifest folder to write")
    args = ap.parse_args(argv)

    from pipeline.index import build_index

    p = params_from(args, check_model=False)  # builds no model
    summary = build_index(args.root, args.out, p.layout, p.data, p.submission)
    log.info("indexed: %s", ", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run(main)
