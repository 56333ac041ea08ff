"""MLflow tracking: where runs are stored, and each training's run, datasets and model.

This is the only module that imports mlflow (`CTRPyfunc`, the logged model, lives here
too). Runs go to `MLFLOW_TRACKING_URI` when it is set (a SQLite file, or a shared
`mlflow server` over http), else to the SQLite store `mlflow.db` in the project root,
with artifacts in `mlartifacts/` beside it; never to the deprecated `./mlruns` file store.

A training run (`RunTracker`) opens when training starts, streams each epoch's metrics,
and ends FINISHED, FAILED (an exception) or KILLED (Ctrl-C, or SIGTERM turned into
`KeyboardInterrupt` by the train stage); a resumed training reopens the same run. Its
inputs are the train/val/test splits as MLflow datasets (source: the DVC path; digest:
the split file's content hash). Its model is registered as `<model>-<dataset>` (e.g.
`deepfm-ml-100k`: a validation AUC only compares with others on the same data), and the
alias `champion` points at the version with the best validation AUC among the versions
trained on the same validation split (version tag `val_digest`) as the newest one; the
test split never takes part. Serve it with
`mlflow models predict -m models:/deepfm-ml-100k@champion --env-manager local`.

`evaluate` adds test metrics and figures to finished runs through `FinishedRuns`, which
never reopens them (their status, end time and duration stay the training's), and groups
one model's seed runs under a parent run (`mlflow.parentRunId`), which the UI nests.

Example::

    with RunTracker.start("deepfm-movielens", "fm-seed-42", params, tags) as run:
        run.log_epoch({"train_loss": 0.52, "val_auc": 0.78}, step=1)
        run.log_artifact(Path("models/fm/seed-42/history.csv"))
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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sqlalchemy.engine import make_url

import deepfm
from deepfm.errors import UserError
from deepfm.serving import SERVING_PACKAGES, CTRPredictor

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0
SQLITE_PREFIX = "sqlite:///"
CHAMPION = "champion"
PARENT_TAG = "mlflow.parentRunId"


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

    Other stores are checked by opening them (`open_experiment`).
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


def open_experiment(experiment_name: str) -> str:
    """Open the tracking store and get (or create) experiment `experiment_name`; its id.

    Any store that cannot be used (unknown scheme, missing driver, unwritable file,
    server down, an invalid experiment name) raises `TrackingError` naming the URI.
    """
    uri = tracking_uri()
    check_tracking_server(uri)
    try:
        with _store_lock(uri):
            return _experiment_id(uri, experiment_name)
    except Exception as err:  # whatever the store's backend raises: one line naming it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be used for experiment "
            f"{experiment_name!r} (tracking.experiment_name): {reason}"
        ) from err


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
    """One MLflow training run, active in this process until the `with` block ends.

    Use `RunTracker.start(...)` for a new run or `RunTracker.resume(run_id)` to continue
    a training's run; the run ends FINISHED, KILLED if the block ends by
    `KeyboardInterrupt` (Ctrl-C, or SIGTERM as the train stage turns it), else FAILED if
    it raises.
    """

    def __init__(self, run: mlflow.ActiveRun) -> None:
        self._run = run

    @classmethod
    def start(
        cls, experiment_name: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> RunTracker:
        """Create or get the experiment, start a run in it and log `params`."""
        experiment_id = open_experiment(experiment_name)
        uri = tracking_uri()
        mlflow.set_tracking_uri(uri)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
        try:
            mlflow.log_params(params)
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        logger.info(
            "MLflow run %s (%s) in %r at %s", run.info.run_id, run_name, experiment_name, uri
        )
        return cls(run)

    @classmethod
    def resume(cls, run_id: str) -> RunTracker:
        """Reopen run `run_id` (RUNNING again) to log more to it."""
        mlflow.set_tracking_uri(tracking_uri())
        logger.info("continuing MLflow run %s", run_id)
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

    def log_datasets(self, splits: dict[str, Path]) -> None:
        """Each split (context -> Parquet file, a path relative to the project) as a run
        input: named after the file, the file as source, its content hash as digest."""
        for context, path in splits.items():
            mlflow.log_input(split_dataset(path), context=context)

    def log_model(self, model_pt: Path, vocab_dir: Path, input_example: pd.DataFrame) -> str:
        """Log `CTRPyfunc` as the run's model `model`; return its `models:/` URI.

        The signature is inferred from `input_example` (raw features) and the
        probabilities the model gives for it.
        """
        predictions = CTRPredictor.from_files(model_pt, vocab_dir).predict(input_example)
        info = mlflow.pyfunc.log_model(
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
        return info.model_uri

    def register_model(self, model_uri: str, name: str, val_auc: float, val_digest: str) -> str:
        """Register `model_uri` as a new version of `name`; move `champion` to the best
        version by validation AUC among those with this `val_digest`. The version."""
        uri = tracking_uri()
        client = mlflow.MlflowClient(uri)
        tags = {"val_auc": repr(val_auc), "val_digest": val_digest}
        with _store_lock(uri):  # two trainings must not both create the registered model
            version = mlflow.register_model(model_uri, name, tags=tags).version
            rivals = [
                found
                for found in client.search_model_versions(f"name = '{name}'")
                if found.tags.get("val_digest") == val_digest and "val_auc" in found.tags
            ]
            best = max(
                rivals, key=lambda found: (float(found.tags["val_auc"]), -int(found.version))
            )
            client.set_registered_model_alias(name, CHAMPION, best.version)
        logger.info(
            "registered %s version %s; %s is version %s", name, version, CHAMPION, best.version
        )
        return str(version)

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        mlflow.end_run(status)


class FinishedRuns:
    """The training runs `evaluate` adds to: never reopened, so each keeps its status, end
    time and duration; and the parent run that groups one model's seed runs."""

    def __init__(self) -> None:
        self.uri = tracking_uri()
        check_tracking_server(self.uri)
        self.client = mlflow.MlflowClient(self.uri)

    def exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
        return True

    def check(self, run_id: str, source: Path) -> None:
        """`TrackingError` unless the store has run `run_id` (named in file `source`)."""
        if not self.exists(run_id):
            raise TrackingError(
                f"{source} names MLflow run {run_id}, which the tracking store {self.uri} "
                "does not have (a fresh clone, or another MLFLOW_TRACKING_URI); train again "
                "or point MLFLOW_TRACKING_URI at the store that has it"
            )

    def add(self, run_id: str, metrics: dict[str, float], files: list[Path]) -> None:
        """Log `metrics` and `files` (at the artifact root) to finished run `run_id`."""
        for name, value in metrics.items():
            self.client.log_metric(run_id, name, value)
        for path in files:
            self.client.log_artifact(run_id, str(path))

    def group(
        self, run_ids: list[str], run_name: str, metrics: dict[str, float], files: list[Path]
    ) -> str:
        """The parent of `run_ids` (their shared one if they have one, else a new one in
        the first run's experiment) with `metrics` and `files`; its id."""
        runs = [self.client.get_run(run_id) for run_id in run_ids]
        parents = {run.data.tags.get(PARENT_TAG) for run in runs}
        parent_id = parents.pop() if len(parents) == 1 else None
        if parent_id is None:
            parent = self.client.create_run(
                runs[0].info.experiment_id, run_name=run_name, tags={"seeds": str(len(runs))}
            )
            parent_id = parent.info.run_id
            self.client.set_terminated(parent_id, "FINISHED")
            for run_id in run_ids:
                self.client.set_tag(run_id, PARENT_TAG, parent_id)
        self.add(parent_id, metrics, files)
        return parent_id


def split_dataset(path: Path) -> MetaDataset:
    """A prepared split as an MLflow dataset: name and source from `path`, digest the
    SHA-256 of its bytes (32 hex digits), schema of its columns."""
    parquet = pq.ParquetFile(path)
    first_row = next(parquet.iter_batches(batch_size=1), parquet.schema_arrow.empty_table())
    with warnings.catch_warnings():  # the source's kind, integer columns: nothing to act on
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(path))
        schema = infer_signature(first_row.to_pandas()).inputs
    return MetaDataset(source, name=path.stem, digest=file_digest(path), schema=schema)


def file_digest(path: Path) -> str:
    """The first 32 hex digits of the SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:32]


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
