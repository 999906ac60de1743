"""Setting params keys on their own lines: values change, comments, order and layout stay."""

from __future__ import annotations

import pytest
import yaml

from pipeline.params_edit import ParamsEditError, flatten, merge, nest, set_keys, yaml_scalar

TEXT = """\
# top comment
seed: 0

train:
  lr: 0.003                # peak learning rate
  subsets: [medium]        # a flow list
  name: "quoted # not a comment"  # the comment
  device: auto

finetune:
  epochs: 0
  loss:                    # nested
    metric: triplet
"""


def test_a_value_changes_and_its_comment_keeps_its_column():
    new = set_keys(TEXT, {"train.lr": 0.01, "train.subsets": ["medium", "large"]})
    lines = new.splitlines()
    assert lines[4] == "  lr: 0.01                 # peak learning rate"
    assert lines[5] == "  subsets: [medium, large] # a flow list"
    assert [line for line in new.splitlines() if line != lines[4] and line != lines[5]] == [
        line for i, line in enumerate(TEXT.splitlines()) if i not in (4, 5)
    ]


def test_quoted_hashes_and_nested_keys():
    new = set_keys(TEXT, {"train.name": "x", "finetune.loss.metric": "contrastive", "seed": 3})
    data = yaml.safe_load(new)
    assert data["train"]["name"] == "x" and data["finetune"]["loss"]["metric"] == "contrastive" and data["seed"] == 3
    line, was = new.splitlines()[6], TEXT.splitlines()[6]
    assert line.startswith("  name: x ") and line.index("# the comment") == was.rindex("# the comment")
    assert "  loss:                    # nested" in new.splitlines()


def test_a_missing_key_is_added_to_its_section():
    new = set_keys(TEXT, {"finetune.loss.head": "arcface", "train.workers": 8})
    data = yaml.safe_load(new)
    assert data["finetune"]["loss"] == {"metric": "triplet", "head": "arcface"}
    assert list(data["train"]) == ["lr", "subsets", "name", "device", "workers"]
    with pytest.raises(ParamsEditError, match="nosuch.key: neither it nor its section"):
        set_keys(TEXT, {"nosuch.key": 1})


def test_a_section_or_an_unsafe_layout_is_refused():
    with pytest.raises(ParamsEditError, match="finetune.loss is a section"):
        set_keys(TEXT, {"finetune.loss": "x"})
    with pytest.raises(ParamsEditError, match="did not give the expected values"):
        set_keys("train: {lr: 0.1}\n", {"train.lr": 0.2})


def test_helpers():
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}
    assert flatten(tree) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert nest(flatten(tree)) == tree
    assert merge({"a": {"b": 1, "x": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "x": 2}}
    assert [yaml_scalar(v) for v in (1.0, "auto", None, True, ["a", "b"], 0.0001)] == [
        "1.0",
        "auto",
        "null",
        "true",
        "[a, b]",
        "0.0001",
    ]
