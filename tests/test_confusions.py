import pandas as pd

from pipeline.confusions import confused_pairs, identity_accuracy, misclassified_paths, read_predictions


def predictions(rows):
    return pd.DataFrame(rows, columns=["path", "identity", "predicted", "confidence"])


P = predictions(
    [
        ("v/a/1.jpg", "a", "a", 0.9),
        ("v/a/2.jpg", "a", "b", 0.6),
        ("v/a/3.jpg", "a", "b", 0.8),
        ("v/b/1.jpg", "b", "a", 0.7),
        ("v/b/2.jpg", "b", "b", 0.9),
        ("v/c/1.jpg", "c", "c", 0.9),
        ("v/c/2.jpg", "c", "a", 0.5),
        ("v/d/1.jpg", "d", "d", 0.9),
    ]
)


def test_identity_accuracy_worst_first():
    acc = identity_accuracy(P)
    assert acc["identity"].tolist() == ["a", "b", "c", "d"]  # 1/3, then 1/2 with ties broken by name, then 1
    assert acc["accuracy"].tolist() == [round(1 / 3, 6), 0.5, 0.5, 1.0]
    assert acc["images"].tolist() == [3, 2, 2, 1] and acc["errors"].tolist() == [2, 1, 1, 0]
    assert acc["mistaken_for"].tolist() == ["b", "a", "a", ""]


def test_confused_pairs_count_both_directions():
    pairs = confused_pairs(P, n=5)
    assert pairs.to_dict("records")[0] == {"a": "a", "b": "b", "count": 3, "a_as_b": 2, "b_as_a": 1}
    assert pairs.to_dict("records")[1] == {"a": "a", "b": "c", "count": 1, "a_as_b": 0, "b_as_a": 1}
    assert len(confused_pairs(P, n=1)) == 1


def test_no_errors_no_pairs():
    right = predictions([("x", "a", "a", 1.0), ("y", "b", "b", 1.0)])
    assert confused_pairs(right, n=3).empty
    assert confused_pairs(P, n=0).empty
    assert identity_accuracy(right)["accuracy"].tolist() == [1.0, 1.0]


def test_misclassified_paths_most_confident_first():
    assert misclassified_paths(P, "a", "b") == ["v/a/3.jpg", "v/a/2.jpg"]
    assert misclassified_paths(P, "d", "a") == []


def test_identity_names_stay_strings(tmp_path):
    path = tmp_path / "val_predictions.csv"
    path.write_text("path,identity,predicted,confidence\nv/007/1.jpg,007,010,0.5\n")
    table = read_predictions(str(path))
    assert table["identity"].tolist() == ["007"] and table["predicted"].tolist() == ["010"]
