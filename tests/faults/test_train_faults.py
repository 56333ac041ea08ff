"""`train` killed mid-epoch, and run twice: the same weights and metrics, bit for bit (CPU)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import ExperimentConfig
from faults.processes import run_stage, stage, store_env

MODEL = ("--model", "deepfm")
TIMINGS = {"seconds", "train_seconds", "samples_per_second"}


def steps_per_epoch(work: Path) -> int:
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    rows = pq.read_metadata(work / config.data.processed_path / "train.parquet").num_rows
    return math.ceil(rows / config.train.batch_size)


def outcome(work: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, str]], dict[str, Any]]:
    """What a finished `train` leaves that must not depend on how it got there: the
    weights in model.pt, history.csv and train.json (timings left out)."""
    weights = torch.load(work / "models/deepfm/model.pt", weights_only=True)["state_dict"]
    with open(work / "reports/models/deepfm/history.csv") as handle:
        history = [
            {k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)
        ]
    summary = json.loads((work / "reports/models/deepfm/train.json").read_text())
    return weights, history, {k: v for k, v in summary.items() if k not in TIMINGS}


def assert_same_outcome(work: Path, reference: Path) -> None:
    weights, history, summary = outcome(work)
    expected_weights, expected_history, expected_summary = outcome(reference)
    assert weights.keys() == expected_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert history == expected_history  # floats as written: equal text is equal bits
    assert summary == expected_summary


@pytest.mark.slow
def test_train_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    project, reference_run, stop_at
):
    env = store_env(project / "mlflow.db")
    point = f"optimizer-step:{steps_per_epoch(project) + 3}"  # the third step of epoch 2
    stop_at(project, point, stage("train"), *MODEL, env=env).kill()

    # On disk: epoch 1's checkpoint, whole; no model, no reports, no MLflow run.
    checkpoint = project / "models/deepfm/checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert [path.name for path in checkpoint.parent.iterdir()] == ["checkpoint.pt"]
    assert not (project / "reports").exists()
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = ExperimentConfig.from_yaml(project / "params.yaml").tracking.experiment_name
    assert client.get_experiment_by_name(experiment) is None

    rerun = run_stage(project, "train", *MODEL, env=env)

    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from models/deepfm/checkpoint.pt after epoch 1" in rerun.stderr
    assert not checkpoint.exists()
    assert_same_outcome(project, reference_run)
    run_id = json.loads((project / "models/deepfm/run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_auc")) == [1, 2]


@pytest.mark.slow
def test_two_cpu_train_runs_give_bitwise_equal_weights_and_metrics(project, reference_run):
    result = run_stage(project, "train", *MODEL, env=store_env(project / "mlflow.db"))

    assert result.returncode == 0, result.stderr
    assert_same_outcome(project, reference_run)
