"""The real `train` stage command on small data: outputs on disk and the MLflow run."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from deepfm.data.dataset import CTRDataset
from deepfm.metrics import roc_auc
from deepfm.models.registry import load_model
from deepfm.serving import CTRPredictor
from deepfm.tracking import file_digest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_stage_writes_outputs_and_one_complete_run(workspace, tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    check_train_stage(workspace, uri)


def check_train_stage(workspace: Path, uri: str) -> None:
    """Run `train --model deepfm --seed 42` with MLFLOW_TRACKING_URI `uri` and check all it
    leaves: the model folder, the MLflow run, its datasets, the registered champion."""
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--model", "deepfm", "--seed", "42"],
        cwd=workspace,
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": uri},
    )
    folder = workspace / "models/deepfm/seed-42"
    assert sorted(p.name for p in folder.iterdir()) == [
        "history.csv",
        "model.pt",
        "run.json",
        "train.json",
    ]
    assert [p.name for p in folder.parent.iterdir()] == ["seed-42"]  # no checkpoint, no temps

    # model.pt rebuilds the model from the file alone and scores like the trained one did.
    saved = load_model(folder / "model.pt")
    assert saved.name == "deepfm" and saved.config.train.max_epochs == 2
    assert saved.seed == 42 and len(saved.data_fingerprint) == 64
    val = CTRDataset.from_parquet(workspace / "data/processed/ml-100k/val.parquet", saved.schema)
    with torch.no_grad():
        logits = saved.model(val.batch(torch.arange(len(val)))[0])
    summary = json.loads((folder / "train.json").read_text())
    assert roc_auc(val.labels, logits) == pytest.approx(summary["best_val_auc"], abs=1e-9)
    assert set(summary) == {
        "best_val_auc",
        "best_val_logloss",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "samples_per_second",
        "device",
        "seed",
        "parameters",
    }
    assert summary["seed"] == 42
    assert summary["parameters"] == sum(p.numel() for p in saved.model.parameters())
    with open(folder / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert set(history[0]) == {"epoch", "train_loss", "val_auc", "val_logloss", "seconds"}

    # The MLflow run: params, per-epoch metrics with steps, tags, artifacts, the model.
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "deepfm-seed-42"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["model"] == "deepfm"
    assert run.data.params["seed"] == "42"
    assert run.data.tags["seed"] == "42"
    val_auc = client.get_metric_history(run_id, "val_auc")
    assert sorted(m.step for m in val_auc) == [1, 2]
    assert [float(row["val_auc"]) for row in history] == [
        m.value for m in sorted(val_auc, key=lambda m: m.step)
    ]
    fingerprint = json.loads((workspace / "data/raw/ml-100k/fingerprint.json").read_text())[
        "fingerprint"
    ]
    assert run.data.tags["data_fingerprint"] == fingerprint
    assert run.data.tags["device"] == "cpu"
    assert run.data.tags["torch_version"] == torch.__version__
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"schema.json", "vocab", "history.csv"} <= artifacts

    # The splits are the run's datasets: named by file, the DVC path as source, content digest.
    processed = workspace / "data/processed/ml-100k"
    inputs = {
        d.tags[0].value: (d.dataset.name, json.loads(d.dataset.source), d.dataset.digest)
        for d in run.inputs.dataset_inputs
    }
    assert inputs == {
        context: (
            file,
            {"uri": f"data/processed/ml-100k/{file}.parquet"},
            file_digest(processed / f"{file}.parquet"),
        )
        for context, file in [("train", "train"), ("validation", "val"), ("test", "test")]
    }

    # Registered as deepfm-ml-100k, the champion (the only version), servable by alias.
    version = client.get_model_version_by_alias("deepfm-ml-100k", "champion")
    assert version.run_id == run_id
    assert float(version.tags["val_auc"]) == summary["best_val_auc"]
    request = {
        "dataframe_records": [
            {
                "user_id": 1,
                "movie_id": 1,
                "gender": "M",
                "age": 25,
                "occupation": "writer",
                "zip_code": "01002",
                "genres": ["Drama"],
            },
        ]
    }
    (workspace / "request.json").write_text(json.dumps(request))
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "predict",
            "-m",
            "models:/deepfm-ml-100k@champion",
            "--env-manager",
            "local",
            "-i",
            "request.json",
            "-t",
            "json",
            "-o",
            "served.json",
        ],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": uri},
    )
    assert served.returncode == 0, served.stderr
    mlflow.set_tracking_uri(uri)  # earlier tests in this process may have pointed it elsewhere
    model = mlflow.pyfunc.load_model("models:/deepfm-ml-100k@champion")
    assert model.metadata.get_input_schema().input_names()[:2] == ["user_id", "movie_id"]
    frame = pd.DataFrame(request["dataframe_records"])
    expected = CTRPredictor.from_files(folder / "model.pt", processed / "vocab").predict(frame)
    assert json.loads((workspace / "served.json").read_text())["predictions"] == pytest.approx(
        list(expected), abs=1e-6
    )
    assert not (workspace / "mlruns").exists()
