"""Bad params stop every stage before it does anything: exit 1 and one line naming the
params file, the key and what is allowed (no traceback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfm.cli import run_stage
from faults.processes import run_stage as run_stage_command

# fault -> (params: a mapping, or YAML text as written; a part of the one-line message)
FAULTS: dict[str, tuple[dict[str, Any] | str, str]] = {
    "unknown key": ({"train": {"lrr": 0.01}}, "unknown key 'train.lrr'; valid keys here: models,"),
    "wrong type": ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
    "negative lr": ({"train": {"lr": -0.001}}, "train.lr must be > 0.0, got -0.001"),
    "zero lr": ({"train": {"lr": 0}}, "train.lr must be > 0.0, got 0"),
    "infinite lr": ("train:\n  lr: .inf\n", "train.lr must be a finite number, got inf"),
    "NaN lr": ("train:\n  lr: .nan\n", "train.lr must be a finite number, got nan"),
    "negative weight decay": (
        {"train": {"weight_decay": -0.1}},
        "train.weight_decay must be >= 0.0, got -0.1",
    ),
    "infinite embedding L2": (
        "train:\n  embedding_l2: .inf\n",
        "train.embedding_l2 must be a finite number, got inf",
    ),
    "empty model list": ({"train": {"models": []}}, "train.models is empty; choose from ['fm', "),
    "unknown model": (
        {"train": {"models": ["deepfm", "gbdt"]}},
        "train.models has unknown model 'gbdt'; choose from ['fm', ",
    ),
    "model named twice": (
        {"train": {"models": ["fm", "deepfm", "fm"]}},
        "train.models must name each entry once, got ['fm', 'deepfm', 'fm']",
    ),
    "old train.seed key": ({"train": {"seed": 42}}, "unknown key 'train.seed'; valid keys here:"),
    "empty seed list": ({"train": {"seeds": []}}, "train.seeds must have at least 1 entry, got []"),
    "seed given twice": (
        {"train": {"seeds": [42, 42]}},
        "train.seeds must name each entry once, got [42, 42]",
    ),
    "negative training seed": ({"train": {"seeds": [-3]}}, "train.seeds[0] must be >= 0, got -3"),
    "zero batch size": ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
    "huge batch size": (
        {"train": {"batch_size": 10**9}},
        "train.batch_size must be <= 1048576, got 1000000000",
    ),
    "zero max_epochs": ({"train": {"max_epochs": 0}}, "train.max_epochs must be >= 1, got 0"),
    "zero patience": ({"train": {"patience": 0}}, "train.patience must be >= 1, got 0"),
    "zero nproc": ({"train": {"nproc": 0}}, "train.nproc must be >= 1, got 0"),
    "split ratios not summing to 1": (
        {"data": {"split_ratios": [0.8, 0.1, 0.2]}},
        "data.split_ratios must be three positive numbers (train, val, test) summing to 1, "
        "got [0.8, 0.1, 0.2]",
    ),
    "negative split seed": ({"data": {"seed": -1}}, "data.seed must be >= 0, got -1"),
    "label threshold above the rating scale": (
        {"data": {"label_threshold": 10}},
        "data.label_threshold must be <= 5.0, got 10",
    ),
    "NaN label threshold": (
        "data:\n  label_threshold: .nan\n",
        "data.label_threshold must be a finite number, got nan",
    ),
    "zero-wide hidden layer": (
        {"model": {"dnn": {"hidden_units": [0]}}},
        "model.dnn.hidden_units[0] must be >= 1, got 0",
    ),
    "negative hidden layer": (
        {"model": {"deepfm": {"hidden_units": [-5]}}},
        "model.deepfm.hidden_units[0] must be >= 1, got -5",
    ),
    "huge hidden layer": (
        {"model": {"xdeepfm": {"hidden_units": [256, 10**6]}}},
        "model.xdeepfm.hidden_units[1] must be <= 8192, got 1000000",
    ),
    "dropout above 1": (
        {"model": {"deepfm": {"dropout": 1.5}}},
        "model.deepfm.dropout must be < 1.0, got 1.5",
    ),
    "negative dropout": (
        {"model": {"attention_deepfm": {"dropout": -0.1}}},
        "model.attention_deepfm.dropout must be >= 0.0, got -0.1",
    ),
    "zero embedding_dim": (
        {"feature": {"embedding_dim": 0}},
        "feature.embedding_dim must be >= 1, got 0",
    ),
    "huge fm_embed_dim": (
        {"feature": {"fm_embed_dim": 100000000}},
        "feature.fm_embed_dim must be <= 1024, got 100000000",
    ),
    "negative small-vocabulary dim": (
        {"feature": {"small_vocab_dims": [{"max_vocab": 10, "dim": -4}]}},
        "feature.small_vocab_dims[0].dim must be >= 1, got -4",
    ),
    "negative small-vocabulary bound": (
        {"feature": {"small_vocab_dims": [{"max_vocab": -10, "dim": 4}]}},
        "feature.small_vocab_dims[0].max_vocab must be >= 1, got -10",
    ),
    "attention heads not dividing the width": (
        {"model": {"attention_deepfm": {"attention_heads": 3}}},
        "model.attention_deepfm.attention_heads must divide feature.fm_embed_dim (16), got 3",
    ),
    "zero attention layers": (
        {"model": {"attention_deepfm": {"attention_layers": 0}}},
        "model.attention_deepfm.attention_layers must be >= 1, got 0",
    ),
    "odd CIN layer with split_half": (
        {"model": {"xdeepfm": {"cin_layer_sizes": [15, 16]}}},
        "model.xdeepfm.cin_layer_sizes must be even but the last while "
        "model.xdeepfm.cin_split_half is true, got [15, 16]",
    ),
    "zero CIN layer": (
        {"model": {"xdeepfm": {"cin_layer_sizes": [16, 0]}}},
        "model.xdeepfm.cin_layer_sizes[1] must be >= 1, got 0",
    ),
    "empty experiment name": (
        {"tracking": {"experiment_name": ""}},
        "tracking.experiment_name must not be empty",
    ),
    "repeated key": (
        "train:\n  lr: 0.01\n  batch_size: 256\n  lr: 0.1\n",
        "line 4: key 'train.lr' is given again (first on line 2); give each key once",
    ),
    "repeated section": (
        "train:\n  lr: 0.01\ndata:\n  seed: 1\ntrain:\n  batch_size: 256\n",
        "line 5: key 'train' is given again (first on line 1); give each key once",
    ),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    files = (path for path in sorted(folder.rglob("*")) if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_params_stop_a_stage_with_one_line_naming_the_key(fault: str, tmp_path: Path, caplog):
    values, message = FAULTS[fault]
    params = tmp_path / "params.yaml"
    params.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    ran: list[Any] = []

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        run_stage(lambda config, args: ran.append(config), argv=["--params", str(params)])

    assert exit_info.value.code == 1
    assert ran == []  # the stage itself never started
    [error] = [record.getMessage() for record in caplog.records]
    assert error.startswith(f"{params}: ") and message in error
    assert "\n" not in error


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("feature.fm_embed_dim", 100000000, "feature.fm_embed_dim must be <= 1024"),
        ("model.deepfm.hidden_units", [0], "model.deepfm.hidden_units[0] must be >= 1, got 0"),
    ],
)
def test_real_stages_refuse_a_bad_value_before_touching_anything(
    project: Path, key: str, value: Any, message: str
):
    params = yaml.safe_load((project / "params.yaml").read_text())
    section, *inner, name = key.split(".")
    target = params[section]
    for part in inner:
        target = target[part]
    target[name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    before = snapshot(project)

    for command in (("prepare",), ("train", "--model", "deepfm")):
        result = run_stage_command(project, *command)

        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert f"params.yaml: {message}" in error
        assert snapshot(project) == before  # nothing written: data, models, MLflow store
