"""Which identities the classifier mixes up: accuracy per identity and the most confused pairs.

Reads the ensemble stage's out-of-fold validation predictions (`plots/val_predictions.csv`: `path`, `identity`,
`predicted`, `confidence`): each image was predicted by the fold models that did not train on it.
"""

from __future__ import annotations

import pandas as pd

PREDICTION_COLUMNS = ("path", "identity", "predicted", "confidence")


def read_predictions(path: str) -> pd.DataFrame:
    """The prediction table, identity names as strings ("007" stays "007"); a ValueError names what is missing."""
    table = pd.read_csv(path, dtype={"path": str, "identity": str, "predicted": str}, keep_default_na=False)
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: lacks the columns {', '.join(missing)} (re-run the ensemble stage)")
    return table


def identity_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per identity: `identity`, `accuracy`, `images`, `errors` and `mistaken_for` (the identity its images
    were most often predicted as, "" when none was wrong); worst first (ties: more errors, then by name)."""
    wrong = predictions[predictions["identity"] != predictions["predicted"]]
    mistaken = (
        wrong.groupby(["identity", "predicted"]).size().reset_index(name="n")
        .sort_values(["identity", "n", "predicted"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("identity")
        .set_index("identity")["predicted"]
    )  # fmt: skip
    per = predictions.assign(correct=predictions["identity"] == predictions["predicted"]).groupby("identity")
    table = pd.DataFrame({"images": per.size(), "correct": per["correct"].sum()})
    table["errors"] = table["images"] - table["correct"]
    table["accuracy"] = (table["correct"] / table["images"]).round(6)
    table["mistaken_for"] = mistaken.reindex(table.index).fillna("")
    table = table.reset_index().sort_values(
        ["accuracy", "errors", "identity"], ascending=[True, False, True], kind="stable"
    )
    return table[["identity", "accuracy", "images", "errors", "mistaken_for"]].reset_index(drop=True)


def confused_pairs(predictions: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` identity pairs with the most confusions either way: `a`, `b` (a < b as strings), `count`, `a_as_b`
    (images of a predicted as b), `b_as_a`; most confused first (ties by name)."""
    columns = ["a", "b", "count", "a_as_b", "b_as_a"]
    wrong = predictions[predictions["identity"] != predictions["predicted"]]
    if wrong.empty or n == 0:
        return pd.DataFrame(columns=columns).astype({"count": int, "a_as_b": int, "b_as_a": int})
    true, pred = wrong["identity"], wrong["predicted"]
    first = true < pred
    pairs = pd.DataFrame(
        {
            "a": true.where(first, pred),
            "b": pred.where(first, true),
            "a_as_b": first.astype(int),
            "b_as_a": (~first).astype(int),
        }
    )
    out = pairs.groupby(["a", "b"], as_index=False)[["a_as_b", "b_as_a"]].sum()
    out["count"] = out["a_as_b"] + out["b_as_a"]
    out = out.sort_values(["count", "a", "b"], ascending=[False, True, True], kind="stable").head(n)
    return out[columns].reset_index(drop=True)


def misclassified_paths(predictions: pd.DataFrame, identity: str, as_identity: str) -> list[str]:
    """Paths of the validation images of `identity` predicted as `as_identity`, most confident first."""
    rows = predictions[(predictions["identity"] == identity) & (predictions["predicted"] == as_identity)]
    return rows.sort_values("confidence", ascending=False, kind="stable")["path"].tolist()
