"""Params are validated at load: unknown keys, wrong types and impossible values name the key."""

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.params import Params, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_equals_the_documented_defaults():
    assert load_params(ROOT / "params.yaml", check_model=False) == Params()


def test_every_default_key_is_written_in_params_yaml():
    """params.yaml is what `dvc params diff` shows: it must spell out every key, not rely on code defaults."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(written) == set(Params.model_fields)
    for section, field in Params.model_fields.items():
        if isinstance(field.default, BaseModel):
            assert set(written[section]) == set(type(field.default).model_fields), section


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr: unknown key; did you mean 'train.lr'?"),
        ({"trian": {}}, "trian: unknown key; did you mean 'train'?"),
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
        ({"train": {"epochs": "many"}}, "train.epochs: must be an integer >= 1 or 'auto' (got 'many')"),
        ({"model": {"embedding_dim": 0}}, "model.embedding_dim: Input should be greater than or equal to 8"),
        ({"folds": {"k": 3, "train": [0, 3]}}, "folds.train has [3], but folds.k=3 allows only 0..2"),
        ({"folds": {"train": [0, 0]}}, "folds.train lists a fold twice"),
        ({"data": {"source": "kagle"}}, "data.source: Input should be 'synthetic', 'local', 'imagefolder' or 'kaggle'"),
        ({"data": {"source": "local"}}, "data.path is required when data.source is 'local'"),
        ({"train": {"min_lr": 1.0, "lr": 0.1}}, "train.min_lr (1.0) is above train.lr (0.1)"),
        ({"augment": {"hflip": 1.5}}, "augment.hflip: Input should be less than or equal to 1"),
        ({"model": {"stem_stride": 3}}, "model.stem_stride: Input should be 1, 2 or 4"),
        ({"loss": {"head_weight": 0.0, "center_weight": 0.0}}, "loss.head_weight=0 leaves nothing to train"),
        (
            {"finetune": {"loss": {"metirc": "triplet"}}},
            "finetune.loss.metirc: unknown key; did you mean 'finetune.loss.metric'?",
        ),
        ({"finetune": {"loss": {"margin_rad": 2.0}}}, "finetune.loss.margin_rad: Input should be less than 1.57"),
        ({"finetune": {"loss": {"miner": "semi_hard"}}}, "finetune.loss: loss.miner='semi_hard' needs a metric loss"),
        ({"finetune": {"epochs": 2, "warmup_epochs": 2}}, "finetune.warmup_epochs (2.0) must be below finetune.epochs"),
        ({"finetune": {"lr": 0}}, "finetune.lr: Input should be greater than 0"),
        ({"score": {"query_expansion": -1}}, "score.query_expansion: Input should be greater than or equal to 0"),
        ({"score": {"qe_alpha": "high"}}, "score.qe_alpha: Input should be a valid number"),
        ({"score": {"whiten_shrinkage": 1.5}}, "score.whiten_shrinkage: Input should be less than or equal to 1"),
        ({"score": {"whiten": "yes please"}}, "score.whiten: Input should be a valid boolean"),
        ({"embed": {"scales": [1.0, 1.1]}}, "embed.scales [1.0, 1.1]: list each extra zoom once"),
        ({"embed": {"scales": [0.9, 0.9]}}, "embed.scales [0.9, 0.9]: list each extra zoom once"),
        ({"embed": {"scales": [3.0]}}, "embed.scales.0: Input should be less than or equal to 2"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params(raw, "params.yaml", check_model=False)
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


def test_yaml_1_1_exponent_strings_are_read_as_numbers():
    # PyYAML reads `lr: 3e-3` (no dot) as the string "3e-3"; it must still be a float learning rate.
    assert parse_params(yaml.safe_load("train: {lr: 3e-3}"), check_model=False).train.lr == pytest.approx(0.003)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ParamsError, match=r"model.name: unknown model 'resnet181'; did you mean 'resnet18'"):
        parse_params({"model": {"name": "resnet181"}})


def test_torchvision_fallback_names_are_known():
    parse_params({"model": {"name": "tv/shufflenet_v2_x0_5"}})


def test_broken_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(bad)


def test_finetune_params_replace_only_the_named_loss_keys():
    from pipeline.params import finetune_params

    p = parse_params(
        {
            "loss": {"head": "arcface", "margin_rad": 0.3},
            "train": {"steps": 500, "min_lr": 1e-3},
            "finetune": {"epochs": 4, "steps": 50, "lr": 1e-4, "loss": {"metric": "triplet", "miner": "semi_hard"}},
        },
        check_model=False,
    )
    p2 = finetune_params(p)
    assert (p2.loss.head, p2.loss.margin_rad, p2.loss.metric, p2.loss.miner) == ("arcface", 0.3, "triplet", "semi_hard")
    assert (p2.train.epochs, p2.train.lr, p2.train.steps, p2.train.min_lr) == (4, 1e-4, 50, 1e-4)
    assert p2.model == p.model and p2.train.batch_size == p.train.batch_size


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"train": {"min_steps": 500}}, "train.min_steps: renamed; use train.steps"),
        ({"finetune": {"min_steps": 50}}, "finetune.min_steps: renamed; use finetune.steps"),
        ({"synthetic": {"image_size": 64}}, "synthetic.image_size: renamed; use synthetic.render_size"),
        ({"imagefolder": {"image_size": 64}}, "imagefolder.image_size: renamed; use imagefolder.crop_size"),
    ],
)
def test_renamed_keys_name_their_new_name(old, new):
    with pytest.raises(ParamsError, match=new):
        parse_params(old, check_model=False)


def test_the_training_length_is_auto_or_a_number_of_epochs():
    assert parse_params({}, check_model=False).train.epochs == "auto"
    assert parse_params({"train": {"epochs": 20}}, check_model=False).train.epochs == 20
    assert parse_params({"finetune": {"epochs": "auto"}}, check_model=False).finetune.epochs == "auto"
    for bad in ({"train": {"epochs": 0}}, {"train": {"epochs": "many"}}, {"train": {"steps": 0}}):
        with pytest.raises(ParamsError, match=f"train.{next(iter(bad['train']))}"):
            parse_params(bad, check_model=False)
    with pytest.raises(ParamsError, match=r"train.warmup_epochs \(3.0\) must be below train.epochs \(2\)"):
        parse_params({"train": {"epochs": 2, "warmup_epochs": 3.0}}, check_model=False)


def test_pool_grid_is_auto_or_a_side():
    assert parse_params({}, check_model=False).model.pool_grid == "auto"
    assert parse_params({"model": {"pool_grid": 3}}, check_model=False).model.pool_grid == 3
    with pytest.raises(ParamsError, match="model.pool_grid"):
        parse_params({"model": {"pool_grid": "big"}}, check_model=False)


def test_reads_are_traced_by_dotted_key_after_loading():
    from pipeline import params as module

    p = parse_params({}, check_model=False)
    reads = module.trace_reads()
    try:
        _ = (p.seed, p.train.epochs, p.finetune.loss.metric)
        p.score.model_dump()
        _ = p.model_copy(update={"model": p.model.model_copy(update={"pool_grid": 2})}).model.pool_grid
        p.model_dump()  # the whole params written for the record: not a read of every key
    finally:
        module._reads = None
    assert reads == {"seed", "train.epochs", "finetune.loss.metric", "score", "model.pool_grid"}
