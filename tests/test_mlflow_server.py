"""A real `mlflow server` on 127.0.0.1 (SQLite backend, `--serve-artifacts`) as the store:
the train and evaluate stages log runs, datasets, the registered model and artifacts to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from test_train_stage import ROOT, check_train_stage

START_S = 120  # only against a server that never comes up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`(uri, artifacts folder)` of an `mlflow server` process, stopped after the test."""
    artifacts = tmp_path / "server-artifacts"
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"),
        *("--serve-artifacts", "--artifacts-destination", str(artifacts), "--workers", "1"),
    ]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1):
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(
                    f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.2)
    yield uri, artifacts
    server.terminate()
    server.wait(timeout=60)
    log.close()


@pytest.mark.slow
def test_train_and_evaluate_log_everything_to_a_tracking_server(workspace, mlflow_server):
    uri, artifacts = mlflow_server

    check_train_stage(workspace, uri)  # run, datasets, registry + champion, predict by alias
    evaluated = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--model", "deepfm"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": uri},
    )
    assert evaluated.returncode == 0, evaluated.stderr

    client = mlflow.MlflowClient(uri)
    run_id = json.loads((workspace / "models/deepfm/seed-42/run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    report = json.loads((workspace / "reports/models/deepfm/metrics.json").read_text())
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_auc"] == report["seeds"]["42"]["test_auc"]
    assert {"roc.png", "pr.png", "calibration.png", "model.pt"} - {
        a.path for a in client.list_artifacts(run_id)
    } == {"model.pt"}  # figures at the root; model.pt lives in the logged model
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["mean_test_auc"] == report["mean"]["test_auc"]
    # The artifacts are files the server wrote in its own folder, not in the workspace.
    stored = {path.name for path in artifacts.rglob("*") if path.is_file()}
    assert {
        "roc.png",
        "history.csv",
        "schema.json",
        "model.pt",
        "MLmodel",
        "metrics.json",
    } <= stored
    assert not (workspace / "mlartifacts").exists() and not (workspace / "mlruns").exists()
