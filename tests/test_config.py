"""params.yaml <-> ExperimentConfig: defaults agree, bad keys and values are named."""

from pathlib import Path

import pytest
import yaml

from deepfm.config import ConfigError, ExperimentConfig

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
        ({"train": {"lr": -1}}, "train.lr must be > 0"),
        ({"train": {"lr": 0}}, "train.lr must be > 0"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
        ({"train": {"batch_size": 10.5}}, "train.batch_size: expected an integer"),
        ({"train": {"models": []}}, "train.models is empty; choose from ['fm'"),
        ({"train": {"models": ["gbdt"]}}, "unknown model 'gbdt'; choose from"),
        ({"data": {"split": "by_user"}}, "data.split: 'by_user' is not allowed; choose from"),
        ({"data": {"split_ratios": [0.8, 0.1, 0.2]}}, "summing to 1, got [0.8, 0.1, 0.2]"),
        ({"data": {"split_ratios": [0.9, 0.1]}}, "data.split_ratios: expected a list of 3"),
        ({"model": {"xdeepfm": {"cin_split_half": "yes"}}}, "cin_split_half: expected bool"),
        ({"feature": {"fm_embed_dim": 0}}, "feature.fm_embed_dim must be >= 1"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict(values)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"params file not found: .*missing.yaml"):
        ExperimentConfig.from_yaml(tmp_path / "missing.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"patience": 0}}))
    with pytest.raises(ConfigError, match=r"params.yaml: train.patience must be >= 1"):
        ExperimentConfig.from_yaml(path)


def test_embedding_dim_rule_gives_the_seed_table():
    feature = ExperimentConfig().feature
    seed_table = {944: 16, 1679: 16, 3: 4, 8: 4, 22: 8, 383: 8, 20: 8}
    assert {size: feature.embedding_dim_for(size) for size in seed_table} == seed_table
