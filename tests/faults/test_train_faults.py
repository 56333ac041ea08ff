"""`train` killed, stopped or fed bad input: exact resume, KILLED runs, one-line errors
before any training, and the previous model folder kept."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from deepfm.config import ExperimentConfig
from faults.processes import run_stage, stage, store_env

MODEL = ("--model", "deepfm", "--seed", "42")
FOLDER = Path("models/deepfm/seed-42")
CHECKPOINT = Path("models/deepfm/seed-42.checkpoint.pt")
TIMINGS = {"seconds", "train_seconds", "samples_per_second"}


def steps_per_epoch(work: Path) -> int:
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    rows = pq.read_metadata(work / config.data.processed_path / "train.parquet").num_rows
    return math.ceil(rows / config.train.batch_size)


def outcome(work: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, str]], dict[str, Any]]:
    """What a finished `train` leaves that must not depend on how it got there: the
    weights in model.pt, history.csv and train.json (timings left out)."""
    weights = torch.load(work / FOLDER / "model.pt", weights_only=True)["state_dict"]
    with open(work / FOLDER / "history.csv") as handle:
        history = [
            {k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)
        ]
    summary = json.loads((work / FOLDER / "train.json").read_text())
    return weights, history, {k: v for k, v in summary.items() if k not in TIMINGS}


def assert_same_outcome(work: Path, reference: Path) -> None:
    weights, history, summary = outcome(work)
    expected_weights, expected_history, expected_summary = outcome(reference)
    assert weights.keys() == expected_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert history == expected_history  # floats as written: equal text is equal bits
    assert summary == expected_summary


def the_run(work: Path) -> mlflow.entities.Run:
    """The only run of the project's experiment in its store `mlflow.db`."""
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = ExperimentConfig.from_yaml(work / "params.yaml").tracking.experiment_name
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def val_auc_steps(work: Path, run_id: str) -> list[int]:
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "val_auc"))


def set_params(work: Path, section: str, **values: Any) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def one_error(result: Any) -> str:
    """The single ERROR line of a stage that failed cleanly (exit 1, no traceback)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.slow
def test_train_killed_mid_epoch_resumes_to_the_uninterrupted_result_in_the_same_run(
    project, reference_run, stop_at
):
    env = store_env(project / "mlflow.db")
    point = f"optimizer-step:{steps_per_epoch(project) + 3}"  # the third step of epoch 2
    stop_at(project, point, stage("train"), *MODEL, env=env).kill()

    # On disk: epoch 1's checkpoint, whole; no model folder, no reports. The run was open
    # (it streamed epoch 1) and stays RUNNING: a SIGKILL gives no chance to close it.
    checkpoint = project / CHECKPOINT
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert [path.name for path in checkpoint.parent.iterdir()] == [checkpoint.name]
    assert not (project / "reports").exists()
    killed = the_run(project)
    assert killed.info.status == "RUNNING"
    assert val_auc_steps(project, killed.info.run_id) == [1]

    rerun = run_stage(project, "train", *MODEL, env=env)

    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {CHECKPOINT} after epoch 1" in rerun.stderr
    assert not checkpoint.exists()
    assert_same_outcome(project, reference_run)
    run = the_run(project)  # the same run, continued
    assert run.info.run_id == killed.info.run_id
    assert json.loads((project / FOLDER / "run.json").read_text())["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    assert val_auc_steps(project, run.info.run_id) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_train_stopped_by_a_signal_ends_its_run_killed_and_resumes_it(project, stop_at, stop):
    env = store_env(project / "mlflow.db")
    stopped = stop_at(
        project, f"optimizer-step:{steps_per_epoch(project) + 3}", stage("train"), *MODEL, env=env
    )
    stopped.wait_until_stopped()
    os.kill(stopped.process.pid, stop)

    assert stopped.finish() == 128 + stop
    assert "Traceback" not in stopped.output
    assert f"train stopped by {stop.name}; its MLflow run ends KILLED" in stopped.output
    assert the_run(project).info.status == "KILLED"
    assert (project / CHECKPOINT).is_file() and not (project / FOLDER).exists()

    rerun = run_stage(project, "train", *MODEL, env=env)

    assert rerun.returncode == 0, rerun.stderr
    run = the_run(project)
    assert run.info.status == "FINISHED"
    assert val_auc_steps(project, run.info.run_id) == [1, 2]


@pytest.mark.slow
def test_two_cpu_train_runs_give_bitwise_equal_weights_and_metrics(project, reference_run):
    result = run_stage(project, "train", *MODEL, env=store_env(project / "mlflow.db"))

    assert result.returncode == 0, result.stderr
    assert_same_outcome(project, reference_run)


@pytest.mark.slow
def test_a_diverging_training_stops_naming_epoch_and_step_and_keeps_the_previous_model(
    reference_run, tmp_path
):
    work = shutil.copytree(reference_run, tmp_path / "work")
    before = {p.name: p.read_bytes() for p in (work / FOLDER).iterdir()}
    set_params(work, "train", lr=1.0e30)

    result = run_stage(work, "train", *MODEL, env=store_env(work / "mlflow.db"))

    error = one_error(result)
    assert error.endswith(
        "training diverged: the loss is nan at epoch 1, step 2 of 7; lower train.lr (now 1e+30)"
    )
    assert {p.name: p.read_bytes() for p in (work / FOLDER).iterdir()} == before
    assert not (work / CHECKPOINT).exists()
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    statuses = sorted(
        r.info.status
        for r in client.search_runs(
            [client.get_experiment_by_name("deepfm-movielens").experiment_id]
        )
    )
    assert statuses == ["FAILED", "FINISHED"]


def break_vocabulary(work: Path) -> None:
    (work / "data/processed/ml-100k/vocab/genres.parquet").unlink()


def block_model_folder(work: Path) -> None:
    (work / "models").mkdir()
    (work / "models/deepfm").write_text("a file where the model folder goes")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "params", "breaks", "message"),
    [
        (
            {"MLFLOW_TRACKING_URI": "garbage://x"},
            {},
            None,
            "MLflow tracking store garbage://x cannot be used for experiment 'deepfm-movielens' "
            "(tracking.experiment_name): ",
        ),
        (
            {},
            {"tracking": {"experiment_name": ""}},
            None,
            "params.yaml: tracking.experiment_name must not be empty",  # refused with the params
        ),
        (
            {},
            {},
            break_vocabulary,
            "data/processed/ml-100k/vocab/genres.parquet: vocabulary of field 'genres' not found",
        ),
        ({}, {}, block_model_folder, "models/deepfm: cannot write the model there"),
        (
            {},
            {"train": {"device": "cuda"}},
            None,
            "train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'",
        ),
    ],
    ids=[
        "unknown store scheme",
        "empty experiment name",
        "missing vocabulary",
        "model folder not writable",
        "cuda without a GPU",
    ],
)
def test_what_train_needs_is_checked_before_training(project, env, params, breaks, message):
    if "device" in params.get("train", {}) and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for section, values in params.items():
        set_params(project, section, **values)
    if breaks is not None:
        breaks(project)

    result = run_stage(project, "train", *MODEL, env=store_env(project / "mlflow.db") | env)

    assert message in one_error(result)
    assert "epoch 1" not in result.stderr
    assert not (project / CHECKPOINT).exists()
    assert not (project / FOLDER).exists()
