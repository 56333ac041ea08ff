"""MLflow tracking: where runs are stored, and one run's params, metrics, artifacts and model.

This is the only module that imports mlflow (`CTRPyfunc`, the logged model, lives here
too). Runs go to `MLFLOW_TRACKING_URI` when it is set, else to the SQLite store
`mlflow.db` in the project root, with artifacts in `mlartifacts/` beside it; never to
the deprecated `./mlruns` file store.

Example::

    with RunTracker.start("deepfm-movielens", "fm", params, tags) as run:
        run.log_epoch({"train_loss": 0.52, "val_auc": 0.78}, step=1)
        run.log_artifact(Path("reports/models/fm/history.csv"))
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sqlalchemy.engine import make_url

import deepfm
from deepfm.errors import UserError
from deepfm.serving import SERVING_PACKAGES, CTRPredictor

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0
SQLITE_PREFIX = "sqlite:///"


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used; the message names it."""


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<project root>/mlflow.db`.

    The project root is `DVC_ROOT`, which DVC sets for every stage command (the main
    repository's root even when `dvc exp run --temp/--queue` runs in a temporary
    copy), else the working directory.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    return f"{SQLITE_PREFIX}{root / 'mlflow.db'}"


def check_tracking_server(uri: str) -> None:
    """Raise `TrackingError` at once if `uri` is an http(s) server whose `/health` fails.

    Other stores (SQLite, databases) are opened when the first run starts.
    """
    if not uri.startswith(("http://", "https://")):
        return
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is not healthy: {health} returned HTTP {err.code}"
        ) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"MLflow tracking server {uri} does not answer: {reason}") from err


def default_tags(data_fingerprint: str, device: str) -> dict[str, str]:
    """Run tags: git commit, DVC experiment (under `dvc exp run`), data, device, torch."""
    tags = {
        "git_commit": _git_commit(),
        "data_fingerprint": data_fingerprint,
        "device": device,
        "torch_version": torch.__version__,
    }
    # `dvc exp run` sets DVC_EXP_NAME (given or generated) in every stage's environment.
    if dvc_experiment := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = dvc_experiment
    return tags


class RunTracker:
    """One MLflow run, active in this process until the `with` block ends.

    Use `RunTracker.start(...)` for a new run or `RunTracker.resume(run_id)` to add
    to an earlier one; the run ends FINISHED, or FAILED if the block raises.
    """

    def __init__(self, run: mlflow.ActiveRun) -> None:
        self._run = run

    @classmethod
    def start(
        cls, experiment_name: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> RunTracker:
        """Create or get the experiment, start a run in it and log `params`."""
        uri = tracking_uri()
        mlflow.set_tracking_uri(uri)
        with _store_lock(uri):
            experiment_id = _experiment_id(uri, experiment_name)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
        try:
            mlflow.log_params(params)
        except Exception:
            mlflow.end_run("FAILED")
            raise
        logger.info(
            "MLflow run %s (%s) in %r at %s", run.info.run_id, run_name, experiment_name, uri
        )
        return cls(run)

    @classmethod
    def resume(cls, run_id: str) -> RunTracker:
        """Reopen run `run_id` to log more to it."""
        mlflow.set_tracking_uri(tracking_uri())
        return cls(mlflow.start_run(run_id=run_id))

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        """Metrics of epoch `step`, which the metric history keeps in order."""
        mlflow.log_metrics(metrics, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file goes under `artifact_path`; a folder's contents under `artifact_path`,
        by default the folder's own name."""
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path or path.name)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path)
        else:
            raise FileNotFoundError(f"artifact not found: {path}")

    def log_model(self, model_pt: Path, vocab_dir: Path, input_example: pd.DataFrame) -> str:
        """Log `CTRPyfunc` as `runs:/<run_id>/model`; return that URI.

        The signature is inferred from `input_example` (raw features) and the
        probabilities the model gives for it.
        """
        predictions = CTRPredictor.from_files(model_pt, vocab_dir).predict(input_example)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=CTRPyfunc(),
            artifacts={"model": str(model_pt), "vocab": str(vocab_dir)},
            input_example=input_example,
            signature=infer_signature(input_example, predictions),
            # The package's code travels with the model; its dependencies are pinned here
            # rather than inferred (slow, and it misses torch and names the unpublished deepfm).
            code_paths=[str(Path(deepfm.__file__).parent)],
            pip_requirements=[_pinned(package) for package in SERVING_PACKAGES],
        )
        return f"runs:/{self.run_id}/model"

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        mlflow.end_run("FAILED" if exc_type else "FINISHED")


def _sqlite_database(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(make_url(uri).database).resolve()


def _artifact_location(uri: str) -> str | None:
    """For a SQLite store, the file URI of `mlartifacts/` beside the database."""
    database = _sqlite_database(uri)
    return None if database is None else (database.parent / "mlartifacts").as_uri()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock per SQLite store while it is created and the experiment found.

    MLflow creates a new SQLite store's tables, and `create_experiment` an experiment,
    without guarding against another process doing the same at that moment; one of
    them would fail ("table ... already exists"). Logging itself waits on SQLite's lock
    (MLflow sets `PRAGMA busy_timeout = 20000`), so it needs nothing more.
    """
    database = _sqlite_database(uri)
    if database is None:
        yield
        return
    key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"deepfm-mlflow-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name` in store `uri`, created if new."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    except MlflowException as err:
        # Another process (on a tracking server) created it since we looked.
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _pinned(package: str) -> str:
    """`package==<installed version>`, without a local label such as torch's `+cpu`."""
    return f"{package}=={importlib.metadata.version(package).split('+')[0]}"


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


class CTRPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc model; artifacts `model` (model.pt) and `vocab` (the vocab folder)."""

    predictor: CTRPredictor

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = CTRPredictor.from_files(
            Path(context.artifacts["model"]), Path(context.artifacts["vocab"])
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        return self.predictor.predict(model_input)
