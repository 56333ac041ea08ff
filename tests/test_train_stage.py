"""The real `train` stage command on small data: outputs on disk and the MLflow run."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from deepfm.data.dataset import CTRDataset
from deepfm.models.registry import load_model
from deepfm.training.metrics import roc_auc

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_stage_writes_outputs_and_one_complete_run(workspace, tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--model", "deepfm"],
        cwd=workspace,
        check=True,
        capture_output=True,
        text=True,
    )

    # model.pt rebuilds the model from the file alone and scores like the trained one did.
    saved = load_model(workspace / "models/deepfm/model.pt")
    assert saved.name == "deepfm" and saved.config.train.max_epochs == 2
    val = CTRDataset.from_parquet(workspace / "data/processed/ml-100k/val.parquet", saved.schema)
    with torch.no_grad():
        logits = saved.model(val.batch(torch.arange(len(val)))[0])
    summary = json.loads((workspace / "reports/models/deepfm/train.json").read_text())
    assert roc_auc(val.labels, logits) == pytest.approx(summary["best_val_auc"], abs=1e-9)
    assert set(summary) == {
        "best_val_auc",
        "best_val_logloss",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "samples_per_second",
        "device",
    }
    with open(workspace / "reports/models/deepfm/history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert set(history[0]) == {"epoch", "train_loss", "val_auc", "val_logloss", "seconds"}
    assert not (workspace / "models/deepfm/checkpoint.pt").exists()

    # The MLflow run: params, per-epoch metrics with steps, tags, artifacts, the model.
    run_id = json.loads((workspace / "models/deepfm/run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["model"] == "deepfm"
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
    mlflow.set_tracking_uri(uri)  # earlier tests in this process may have pointed it elsewhere
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.metadata.get_input_schema().input_names()[:2] == ["user_id", "movie_id"]
    assert not (workspace / "mlruns").exists()
