"""MLflow under faults: a tracking server that does not answer, and two writers at once."""

from __future__ import annotations

import json
import os
import shutil
import socket

import mlflow
import pytest

from deepfm.config import ExperimentConfig
from faults.processes import run_stage, stage, store_env

MODEL = ("--model", "deepfm", "--seed", "42")


def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: nothing listens on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_closed_tracking_port_stops_train_before_training(project):
    uri = f"http://127.0.0.1:{closed_port()}"

    result = run_stage(project, "train", *MODEL, env=os.environ | {"MLFLOW_TRACKING_URI": uri})

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert f"MLflow tracking server {uri} does not answer" in errors[0]
    assert "Traceback" not in result.stderr
    assert "epoch 1" not in result.stderr
    assert not (project / "models").exists()


@pytest.mark.slow
def test_two_train_runs_logging_at_once_to_one_new_sqlite_store_both_complete(
    template, tmp_path, stop_at
):
    """Both reach the store, which does not exist yet, at the same moment (a barrier
    just before the store is opened), create it and log everything at once."""
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    works = [shutil.copytree(template, tmp_path / name) for name in ("a", "b")]
    runs = [
        stop_at(work, "store-open", stage("train"), *MODEL, env=store_env(store)) for work in works
    ]
    for run in runs:
        run.wait_until_stopped()
    assert not store.exists()
    for run in runs:
        run.release()
    exits = [run.finish() for run in runs]

    for run, status in zip(runs, exits, strict=True):
        assert status == 0, run.output
        assert "database is locked" not in run.output
    config = ExperimentConfig.from_yaml(template / "params.yaml")
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(config.tracking.experiment_name)
    runs_logged = client.search_runs([experiment.experiment_id])
    run_ids = {
        json.loads((w / "models/deepfm/seed-42/run.json").read_text())["run_id"] for w in works
    }
    assert {run.info.run_id for run in runs_logged} == run_ids
    for logged in runs_logged:
        run_id = logged.info.run_id
        assert logged.info.status == "FINISHED"
        # every setting but the search space (tune.*), and "model", "seed"
        settings = [key for key in config.flat() if not key.startswith("tune.")]
        assert len(logged.data.params) == len(settings) + 2
        assert {"best_val_auc", "epochs_run"} <= set(logged.data.metrics)
        assert sorted(m.step for m in client.get_metric_history(run_id, "val_auc")) == [1, 2]
        assert {a.path for a in client.list_artifacts(run_id)} == {
            "history.csv",
            "schema.json",
            "vocab",
        }
    models = client.search_logged_models([experiment.experiment_id])
    assert sorted((m.source_run_id, str(m.status)) for m in models) == sorted(
        (run_id, "READY") for run_id in run_ids
    )
    versions = client.search_model_versions("name = 'deepfm-ml-100k'")
    assert sorted(v.run_id for v in versions) == sorted(run_ids)
