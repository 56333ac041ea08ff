"""params.yaml <-> ExperimentConfig: defaults agree, bad keys and values are named."""

import math
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from deepfm.config import ConfigError, ExperimentConfig, FeatureConfig
from deepfm.model_config import DeepFMConfig, DNNConfig

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_equal_committed_params_yaml():
    assert ExperimentConfig.from_yaml(ROOT / "params.yaml") == ExperimentConfig()


def test_seed_guide_attributes():
    config = ExperimentConfig()
    assert config.data.dataset == "ml-100k"
    assert config.feature.fm_embed_dim == 16


def test_partial_file_keeps_other_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.01\n  models: [fm]\n")
    config = ExperimentConfig.from_yaml(path)
    assert config.train.lr == 0.01
    assert config.train.models == ("fm",)
    assert config.train.batch_size == ExperimentConfig().train.batch_size


def test_flat_params_cover_every_leaf():
    flat = ExperimentConfig().flat()
    assert flat["train.lr"] == 1e-3
    assert flat["model.xdeepfm.cin_layer_sizes"] == [16, 16]
    assert flat["data.split_ratios"] == [0.8, 0.1, 0.1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"lrr": 1}}, "unknown key 'train.lrr'; valid keys here: models, device"),
        ({"bogus": 1}, "unknown key 'bogus'; valid keys here: data, feature, model"),
        ({"model": {"deepfm": {"layers": [1]}}}, "unknown key 'model.deepfm.layers'"),
        ({"model": {"fm": {"k": 1}}}, "unknown key 'model.fm.k'; valid keys here: (none)"),
        ({"train": {"seed": 42}}, "unknown key 'train.seed'; valid keys here: models,"),
        (
            {"feature": {"small_vocab_dims": [{"max_vocab": 9, "dim": 2, "x": 0}]}},
            "unknown key 'feature.small_vocab_dims[0].x'; valid keys here: max_vocab, dim",
        ),
        ({"train": {"lr": -1}}, "train.lr must be > 0.0, got -1"),
        ({"train": {"lr": 0}}, "train.lr must be > 0.0, got 0"),
        ({"train": {"lr": math.inf}}, "train.lr must be a finite number, got inf"),
        ({"train": {"lr": math.nan}}, "train.lr must be a finite number, got nan"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
        ({"train": {"lr": True}}, "train.lr: expected a number, got True"),
        ({"train": {"batch_size": 10.5}}, "train.batch_size: expected an integer, got 10.5"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size must be <= 1048576"),
        ({"train": {"weight_decay": -1e-4}}, "train.weight_decay must be >= 0.0, got -0.0001"),
        ({"train": {"embedding_l2": math.inf}}, "train.embedding_l2 must be a finite number"),
        ({"train": {"max_epochs": 0}}, "train.max_epochs must be >= 1, got 0"),
        ({"train": {"models": []}}, "train.models is empty; choose from ['fm'"),
        ({"train": {"models": ["gbdt"]}}, "train.models has unknown model 'gbdt'; choose from"),
        ({"train": {"models": ["fm", "fm"]}}, "train.models must name each entry once"),
        ({"train": {"seeds": []}}, "train.seeds must have at least 1 entry, got []"),
        ({"train": {"seeds": [7, 7]}}, "train.seeds must name each entry once, got [7, 7]"),
        ({"train": {"seeds": [1, -1]}}, "train.seeds[1] must be >= 0, got -1"),
        ({"train": {"seeds": 42}}, "train.seeds: expected a list, got 42"),
        ({"data": {"split": "by_user"}}, "data.split: 'by_user' is not allowed; choose from"),
        ({"data": {"split_ratios": [0.8, 0.1, 0.2]}}, "summing to 1, got [0.8, 0.1, 0.2]"),
        ({"data": {"split_ratios": [0.9, 0.1]}}, "data.split_ratios must be three positive"),
        ({"data": {"seed": -1}}, "data.seed must be >= 0, got -1"),
        ({"data": {"label_threshold": 10}}, "data.label_threshold must be <= 5.0, got 10"),
        ({"data": {"label_threshold": 0}}, "data.label_threshold must be >= 0.5, got 0"),
        ({"data": {"processed_dir": ""}}, "data.processed_dir must not be empty"),
        ({"model": {"xdeepfm": {"cin_split_half": "yes"}}}, "cin_split_half: expected true or"),
        ({"feature": {"fm_embed_dim": 0}}, "feature.fm_embed_dim must be >= 1, got 0"),
        ({"feature": {"fm_embed_dim": 10**8}}, "feature.fm_embed_dim must be <= 1024"),
        ({"feature": {"embedding_dim": 0}}, "feature.embedding_dim must be >= 1, got 0"),
        (
            {"feature": {"small_vocab_dims": [{"max_vocab": 10, "dim": -4}]}},
            "feature.small_vocab_dims[0].dim must be >= 1, got -4",
        ),
        (
            {"feature": {"small_vocab_dims": [{"max_vocab": 10}]}},
            "feature.small_vocab_dims[0].dim is required",
        ),
        ({"model": {"dnn": {"hidden_units": [0]}}}, "model.dnn.hidden_units[0] must be >= 1"),
        ({"model": {"deepfm": {"hidden_units": [8, -5]}}}, "deepfm.hidden_units[1] must be >= 1"),
        ({"model": {"deepfm": {"dropout": 1.5}}}, "model.deepfm.dropout must be < 1.0, got 1.5"),
        ({"model": {"deepfm": {"dropout": 1}}}, "model.deepfm.dropout must be < 1.0, got 1"),
        (
            {"model": {"attention_deepfm": {"attention_heads": 3}}},
            "model.attention_deepfm.attention_heads must divide feature.fm_embed_dim (16), got 3",
        ),
        (
            {"model": {"attention_deepfm": {"attention_layers": 0}}},
            "model.attention_deepfm.attention_layers must be >= 1, got 0",
        ),
        (
            {"model": {"xdeepfm": {"cin_layer_sizes": [15, 16]}}},
            "model.xdeepfm.cin_layer_sizes must be even but the last while "
            "model.xdeepfm.cin_split_half is true, got [15, 16]",
        ),
        ({"model": {"xdeepfm": {"cin_layer_sizes": []}}}, "cin_layer_sizes must have at least 1"),
        ({"tracking": {"experiment_name": ""}}, "tracking.experiment_name must not be empty"),
        ({"train": 3}, "train: expected a mapping, got 3"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_in_range_edge_values_are_accepted():
    config = ExperimentConfig.from_dict(
        {
            "data": {"label_threshold": 0.5, "seed": 0},
            "feature": {"fm_embed_dim": 1024, "embedding_dim": 1},
            "model": {
                "deepfm": {"dropout": 0.99, "hidden_units": []},
                "xdeepfm": {"cin_layer_sizes": [16, 7]},
                "attention_deepfm": {"attention_heads": 1024},
            },
            "train": {"seeds": [0], "lr": 1, "batch_size": 2**20},
            # the default deepfm search space tries fm_embed_dim 8, which 1024 heads refuse
            "tune": {"models": [], "space": {}},
        }
    )
    assert config.train.seeds == (0,)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.model.xdeepfm.cin_layer_sizes == (16, 7)


def test_dnn_and_deepfm_share_one_section_type():
    model = ExperimentConfig().model
    assert type(model.dnn) is type(model.deepfm) is DNNConfig is DeepFMConfig


def test_replace_validates_like_from_dict():
    train = ExperimentConfig().train
    assert replace(train, seeds=(7,)).seeds == (7,)
    with pytest.raises(ValidationError, match="greater than 0"):
        replace(train, lr=-1.0)
    with pytest.raises(ValidationError, match=r"divide feature\.fm_embed_dim"):
        replace(ExperimentConfig(), feature=FeatureConfig(fm_embed_dim=15))


def test_sections_are_frozen():
    config = ExperimentConfig()
    with pytest.raises(FrozenInstanceError):
        config.train.lr = 1.0  # type: ignore[misc]


def test_to_dict_round_trips():
    config = ExperimentConfig.from_dict({"train": {"seeds": [3, 1]}, "data": {"seed": 5}})
    plain = config.to_dict()
    assert plain["train"]["seeds"] == [3, 1]
    assert plain["feature"]["small_vocab_dims"][0] == {"max_vocab": 10, "dim": 4}
    assert ExperimentConfig.from_dict(plain) == config


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"params file not found: .*missing.yaml"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"patience": 0}}))
    with pytest.raises(ConfigError, match=r"params.yaml: train.patience must be >= 1"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train:\n  lr: 0.1\n  models: [fm]\n  lr: 0.2\n",
            "line 4: key 'train.lr' is given again (first on line 2); give each key once",
        ),
        ("train: {}\ndata: {}\ntrain: {}\n", "line 3: key 'train' is given again (first on"),
        (
            "feature:\n  small_vocab_dims:\n    - {max_vocab: 10, dim: 4, dim: 8}\n",
            "line 3: key 'feature.small_vocab_dims[0].dim' is given again",
        ),
    ],
)
def test_repeated_key_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_yaml(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_yaml_infinity_and_nan_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    for text in (".inf", ".nan", "-.inf"):
        path.write_text(f"train:\n  lr: {text}\n")
        with pytest.raises(ConfigError, match=r"params.yaml: train.lr must be"):
            ExperimentConfig.from_yaml(path)


def test_embedding_dim_rule_gives_the_seed_table():
    feature = ExperimentConfig().feature
    seed_table = {944: 16, 1679: 16, 3: 4, 8: 4, 22: 8, 383: 8, 20: 8}
    assert {size: feature.embedding_dim_for(size) for size in seed_table} == seed_table
