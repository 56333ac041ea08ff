"""Tracking against real SQLite stores in temporary folders; no network."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from deepfm.tracking import (
    CHAMPION,
    FinishedRuns,
    RunTracker,
    TrackingError,
    check_tracking_server,
    cpu_kind,
    default_tags,
    open_experiment,
    tracking_uri,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite tracking URI in a temporary folder, set as MLFLOW_TRACKING_URI meanwhile."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def test_tracking_uri_is_sqlite_in_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"

    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/repo/mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri() == "http://tracking.example:5000"


def test_run_records_params_metrics_artifacts_and_tags(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lynx")
    (tmp_path / "history.csv").write_text("epoch,train_loss\n1,0.6\n")
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "gender.parquet").write_bytes(b"not really parquet")
    tags = default_tags(data_fingerprint="abc123", device="cpu")

    with RunTracker.start("tracking-test", "fm", {"train.lr": 0.001, "model": "fm"}, tags) as run:
        for step, loss in enumerate([0.6, 0.5, 0.45], start=1):
            run.log_epoch({"train_loss": loss, "val_auc": 0.7 + step / 100}, step=step)
        run.log_metrics({"best_val_auc": 0.73})
        run.log_artifact(tmp_path / "history.csv")
        run.log_artifact(tmp_path / "vocab")
        run.log_artifact(tmp_path / "history.csv", "reports")
        with pytest.raises(FileNotFoundError, match="missing"):
            run.log_artifact(tmp_path / "missing.csv")

    client = MlflowClient(store)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "fm"
    assert logged.data.params == {"train.lr": "0.001", "model": "fm"}
    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.5), (3, 0.45)]
    assert logged.data.metrics["best_val_auc"] == 0.73
    assert logged.data.tags["dvc_experiment"] == "brisk-lynx"
    assert logged.data.tags["data_fingerprint"] == "abc123"
    assert logged.data.tags["device"] == "cpu"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", logged.data.tags["git_commit"])
    assert logged.data.tags["torch_version"]
    assert logged.data.tags["cpu_kind"] == cpu_kind()
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert artifacts == {"history.csv", "vocab", "reports"}
    assert [a.path for a in client.list_artifacts(run.run_id, "vocab")] == ["vocab/gender.parquet"]
    assert [a.path for a in client.list_artifacts(run.run_id, "reports")] == ["reports/history.csv"]
    # Artifacts live in mlartifacts/ beside the database, never in a ./mlruns file store.
    database = Path(store.removeprefix("sqlite:///"))
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.artifact_location == (database.parent / "mlartifacts").as_uri()
    assert logged.info.artifact_uri.startswith(experiment.artifact_location)
    assert not (tmp_path / "mlruns").exists()


def test_resume_adds_to_the_same_run(store: str, tmp_path: Path) -> None:
    with RunTracker.start("tracking-test", "dnn", {"model": "dnn"}, {}) as run:
        run.log_epoch({"val_auc": 0.7}, step=1)
    (tmp_path / "roc.png").write_bytes(b"png")

    with RunTracker.resume(run.run_id) as resumed:
        resumed.log_metrics({"test_auc": 0.75})
        resumed.log_artifact(tmp_path / "roc.png", "figures")

    client = MlflowClient(store)
    logged = client.get_run(run.run_id)
    assert resumed.run_id == run.run_id
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics == {"val_auc": 0.7, "test_auc": 0.75}
    assert [a.path for a in client.list_artifacts(run.run_id, "figures")] == ["figures/roc.png"]
    experiment = client.get_experiment_by_name("tracking-test")
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'dnn'")
    assert len(runs) == 1


def test_run_that_raises_is_marked_failed(store: str) -> None:
    with pytest.raises(RuntimeError, match="diverged"):  # noqa: SIM117
        with RunTracker.start("tracking-test", "xdeepfm", {}, {}) as run:
            raise RuntimeError("loss diverged")

    assert MlflowClient(store).get_run(run.run_id).info.status == "FAILED"


def test_default_tags_leave_out_dvc_experiment_outside_dvc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)

    tags = default_tags(data_fingerprint="abc123", device="cuda:0")

    assert set(tags) == {"git_commit", "data_fingerprint", "device", "torch_version"}


def test_the_cpu_kind_names_what_decides_the_rounding() -> None:
    vendor, capability, threads = cpu_kind().split(", ")
    assert vendor
    assert capability == torch.backends.cpu.get_cpu_capability()
    assert threads == f"{torch.get_num_threads()} threads"


def test_closed_port_fails_fast_naming_the_uri() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"

    started = time.monotonic()
    with pytest.raises(TrackingError, match=re.escape(uri)):
        check_tracking_server(uri)
    assert time.monotonic() - started < 3


class _HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_server_health_check_on_a_local_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        check_tracking_server(uri)
        check_tracking_server(f"{uri}/")
        with pytest.raises(TrackingError, match="HTTP 404"):
            check_tracking_server(f"{uri}/not-mlflow")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("uri", "experiment", "reason"),
    [
        ("garbage://x", "deepfm-movielens", "unsupported URI 'garbage://x'"),
        ("postgresql://user@127.0.0.1:1/mlflow", "deepfm-movielens", ""),
        ("STORE", "", "Invalid experiment name: ''"),
    ],
    ids=["unknown scheme", "database without its driver", "empty experiment name"],
)
def test_a_store_or_experiment_that_cannot_be_used_is_one_error_naming_it(
    uri: str, experiment: str, reason: str, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store if uri == "STORE" else uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    with pytest.raises(TrackingError) as raised:
        open_experiment(experiment)

    message = str(raised.value)
    assert message.startswith(
        f"MLflow tracking store {uri} cannot be used for experiment {experiment!r} "
        "(tracking.experiment_name): "
    )
    assert reason in message and "\n" not in message


def test_a_new_sqlite_store_is_opened_and_its_experiment_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    experiment_id = open_experiment("fresh")

    assert MlflowClient(uri).get_experiment_by_name("fresh").experiment_id == experiment_id
    assert open_experiment("fresh") == experiment_id


@pytest.mark.parametrize(
    ("interrupt", "status"), [(KeyboardInterrupt, "KILLED"), (ValueError, "FAILED")]
)
def test_interrupted_run_ends_killed_and_a_failing_one_failed(
    store: str, interrupt: type[BaseException], status: str
) -> None:
    with pytest.raises(interrupt):  # noqa: SIM117
        with RunTracker.start("tracking-test", "stopped", {}, {}) as run:
            raise interrupt()

    assert MlflowClient(store).get_run(run.run_id).info.status == status


def test_finished_run_gets_metrics_without_being_reopened(store: str, tmp_path: Path) -> None:
    with RunTracker.start("tracking-test", "done", {}, {}) as run:
        run.log_epoch({"val_auc": 0.7}, step=1)
    client = MlflowClient(store)
    before = client.get_run(run.run_id).info
    (tmp_path / "roc.png").write_bytes(b"png")

    FinishedRuns().add(run.run_id, {"test_auc": 0.75}, [tmp_path / "roc.png"])

    after = client.get_run(run.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", before.end_time)
    assert after.data.metrics == {"val_auc": 0.7, "test_auc": 0.75}
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["roc.png"]
    with pytest.raises(TrackingError, match=r"^run\.json names MLflow run 0123, which the"):
        FinishedRuns().check("0123", Path("run.json"))


def test_seed_runs_are_grouped_under_one_parent_reused_next_time(store: str) -> None:
    run_ids = []
    for seed in (1, 2):
        with RunTracker.start("tracking-test", f"grouped-seed-{seed}", {}, {}) as run:
            run_ids.append(run.run_id)
    runs = FinishedRuns()

    parent = runs.group(run_ids, "grouped", {"mean_test_auc": 0.7}, [])
    again = runs.group(run_ids, "grouped", {"mean_test_auc": 0.71}, [])

    client = MlflowClient(store)
    assert again == parent
    assert client.get_run(parent).data.metrics == {"mean_test_auc": 0.71}
    assert client.get_run(parent).info.status == "FINISHED"
    for run_id in run_ids:
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent
    # The parent spans its seed runs: the UI's Duration is theirs, first start to last end.
    seeds = [client.get_run(run_id).info for run_id in run_ids]
    assert client.get_run(parent).info.start_time == min(info.start_time for info in seeds)
    assert client.get_run(parent).info.end_time == max(info.end_time for info in seeds)


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias("champion-test", CHAMPION).version)


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context: object, model_input: pd.DataFrame) -> list[float]:
        return [0.5] * len(model_input)


def test_champion_is_the_best_validation_auc_on_the_same_validation_split(
    store: str, tmp_path: Path
) -> None:
    client = MlflowClient(store)
    versions = {}
    for label, val_auc, split in [
        ("a", 0.70, "s1"),
        ("b", 0.75, "s1"),
        ("c", 0.72, "s1"),
        ("d", 0.60, "s2"),
    ]:
        with RunTracker.start("tracking-test", label, {}, {}) as run:
            logged = mlflow.pyfunc.log_model(name="model", python_model=_Constant())
            versions[label] = run.register_model(logged.model_uri, "champion-test", val_auc, split)
        if label == "c":
            assert champion(client) == versions["b"]
    # A new validation split starts its own comparison.
    assert champion(client) == versions["d"]


def test_only_tracking_imports_mlflow():
    """One place knows MLflow (the `tracking` package): every other module stays free of it."""
    package = Path(__file__).resolve().parents[1] / "src" / "deepfm"
    importers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"^\s*(import mlflow|from mlflow)", path.read_text(), re.M)
    }
    assert importers and all(name.startswith("tracking/") for name in importers), importers
