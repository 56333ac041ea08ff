"""Bad params stop every stage before it does anything: exit 1 and one line naming the
params file, the key and what is allowed (no traceback)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfm.stage import run_stage

FAULTS = {
    "unknown key": ({"train": {"lrr": 0.01}}, "unknown key 'train.lrr'; valid keys here: models,"),
    "wrong type": ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
    "negative lr": ({"train": {"lr": -0.001}}, "train.lr must be > 0, got -0.001"),
    "zero lr": ({"train": {"lr": 0}}, "train.lr must be > 0, got 0"),
    "empty model list": ({"train": {"models": []}}, "train.models is empty; choose from ['fm', "),
    "unknown model": (
        {"train": {"models": ["deepfm", "gbdt"]}},
        "train.models: unknown model 'gbdt'; choose from ['fm', ",
    ),
    "split ratios not summing to 1": (
        {"data": {"split_ratios": [0.8, 0.1, 0.2]}},
        "data.split_ratios must be three positive numbers (train, val, test) summing to 1, "
        "got [0.8, 0.1, 0.2]",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_params_stop_a_stage_with_one_line_naming_the_key(fault: str, tmp_path: Path, caplog):
    values, message = FAULTS[fault]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(values))
    ran: list[Any] = []

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        run_stage(lambda config, args: ran.append(config), argv=["--params", str(params)])

    assert exit_info.value.code == 1
    assert ran == []  # the stage itself never started
    [error] = [record.getMessage() for record in caplog.records]
    assert error.startswith(f"{params}: ") and message in error
    assert "\n" not in error
