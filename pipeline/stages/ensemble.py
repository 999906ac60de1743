"""Stage `ensemble`: per-fold and ensemble metrics, the pixel baseline, ROC plots, per-trial validation scores and
out-of-fold validation predictions (plot data), and both submissions."""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.common import log, params_from, parser, run, stage


@stage
def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, __spec__.name)
    ap.add_argument("--embeddings", type=Path, required=True, help="folder of fold<k>.npz")
    ap.add_argument("--index", type=Path, required=True, help="manifest folder")
    ap.add_argument("--decoded", type=Path, required=True, help="decoded arrays folder (pixel baseline)")
    ap.add_argument("--folds", type=Path, required=True, help="folds CSV (which validation images each fold saw)")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    ap.add_argument("--roc", type=Path, required=True, help="ROC points CSV (dvc plots)")
    ap.add_argument("--plot", type=Path, required=True, help="ROC + histogram PNG")
    ap.add_argument("--scores", type=Path, required=True, help="per-trial validation scores CSV (dvc plots)")
    ap.add_argument("--predictions", type=Path, required=True, help="out-of-fold validation predictions CSV")
    ap.add_argument("--submissions", type=Path, required=True, help="folder for the two CSVs")
    args = ap.parse_args(argv)

    import pandas as pd

    from pipeline import metrics, paths, plots
    from pipeline.data import load_array, read_manifest
    from pipeline.embeddings import FoldEmbeddings
    from pipeline.ensemble import (
        Whitenings,
        evaluate,
        pixel_baseline_auc,
        prediction_table,
        test_predictions,
        trial_table,
    )
    from pipeline.folds import load_labelled
    from pipeline.io import atomic_path, write_json
    from pipeline.submission import write_classification, write_verification
    from pipeline.summary import summary_lines
    from pipeline.trial_files import read_trial_manifest

    p = params_from(args, check_model=False)  # builds no model
    folds = [FoldEmbeddings.load(args.embeddings / f"fold{k}.npz") for k in p.folds.train]
    labelled = load_labelled(args.index, args.folds, p.folds.holdout)
    classes = labelled.classes
    if folds[0].classes != classes:
        raise ValueError(f"{args.embeddings}/{folds[0].name}.npz has other classes than {args.index}: re-run embed")
    val_trials = read_trial_manifest(args.index, "val_trials")
    unseen = None
    if p.folds.holdout == "validation":  # each fold trained on the validation images outside its own fold
        unseen = {f.name: labelled.fold_ids == k for f, k in zip(folds, p.folds.train, strict=True)}
    whitenings = Whitenings(folds, labelled, p.score)  # fitted once for both splits (score.whiten)
    results, scores, val_probs = evaluate(folds, val_trials, labelled, p.score, p.classify, unseen, whitenings)
    ver_names = read_manifest(args.index, "val_verification")["name"].tolist()
    baseline = pixel_baseline_auc(load_array(args.decoded / "val_verification.npy"), ver_names, val_trials)
    fold_aucs = [results[f.name]["val_auc"] for f in folds]
    summary = {
        **results["ensemble"],
        "pixel_baseline_auc": baseline,
        "fold_mean_auc": sum(fold_aucs) / len(fold_aucs),
        "folds": {f.name: results[f.name] for f in folds},
    }
    write_json(args.metrics, summary)

    labels = val_trials["label"].to_numpy()
    curves, rows = {}, []
    for name, s in scores.items():
        table = metrics.roc_table(labels, s)
        curves[name] = (table["fpr"].to_numpy(), table["tpr"].to_numpy())
        rows.append(table.assign(model=name))
    with atomic_path(args.roc) as tmp:
        pd.concat(rows, ignore_index=True)[["model", "fpr", "tpr", "threshold"]].to_csv(tmp, index=False)
    with atomic_path(args.scores) as tmp:
        trial_table(val_trials, scores).to_csv(tmp, index=False)
    with atomic_path(args.predictions) as tmp:
        prediction_table(labelled, val_probs).to_csv(tmp, index=False)
    title = f"ensemble AUC {summary['val_auc']:.4f}, pixel baseline {baseline:.4f}"
    plots.roc_and_histogram(curves, labels, scores["ensemble"], title, args.plot)

    test_trials = read_trial_manifest(args.index, "test_trials")
    ids, predicted, test_scores = test_predictions(folds, test_trials, labelled, p.score, p.classify, whitenings)
    write_classification(
        args.submissions / "classification.csv",
        ids,
        predicted,
        p.submission.classification_header,
        identities=set(classes),
    )
    write_verification(
        args.submissions / "verification.csv", test_trials, test_scores, p.submission.verification_header
    )
    if args.submissions == paths.SUBMISSIONS and args.metrics == paths.METRICS / "ensemble.json":
        # The run's last lines (`dvc repro`, `dvc exp run`): the submissions, the validation figures, what comes next.
        for line in summary_lines(Path("."), hidden=False):
            log.info(line)
        return
    log.info(  # written elsewhere than the project's paths, which the summary reads
        "validation: AUC %.4f (folds %s, pixel baseline %.4f), EER %.4f, accuracy %s",
        summary["val_auc"],
        ", ".join(f"{a:.4f}" for a in fold_aucs),
        baseline,
        summary["val_eer"],
        f"{summary.get('val_accuracy', float('nan')):.4f}",
    )


if __name__ == "__main__":
    run(main)
