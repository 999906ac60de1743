"""Stage `analyse`: where the model fails, as pictures: the worst false accepts and false rejects of the validation
trials at the EER threshold, the most confused identity pairs and the accuracy of each identity (out of fold)."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import log, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--scores", type=Path, required=True, help="per-trial validation scores CSV (ensemble stage)")
    ap.add_argument("--predictions", type=Path, required=True, help="out-of-fold validation predictions CSV")
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument(
        "--decoded", type=Path, required=True, help="decoded arrays folder (the faces as the model saw them)"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the pictures and tables")
    args = ap.parse_args(argv)

    from pipeline.analysis import analyse
    from pipeline.params import load_params

    # Every key is still validated; only the model name's check is skipped: it imports timm and torch (seconds and
    # most of a GB) for a stage that never builds a model, and the train stage checks it.
    p = load_params(args.params, check_model=False)
    done = analyse(args.scores, args.predictions, args.index, args.decoded, args.out, p.analysis)
    log.info(
        "EER threshold %.4g: drew %d of %d false accepts and %d of %d false rejects, %d confused identity pairs, in %s",
        done["threshold"],
        done["drawn"]["false_accepts"],
        done["false_accepts"],
        done["drawn"]["false_rejects"],
        done["false_rejects"],
        done["confused_pairs"],
        args.out,
    )
    worst = done["worst_identity"]
    if worst:
        log.info(
            "worst identity: %s, accuracy %.3f over %d images (mostly taken for %s)",
            worst["identity"],
            worst["accuracy"],
            worst["images"],
            worst["mistaken_for"] or "-",
        )


if __name__ == "__main__":
    run(main)
