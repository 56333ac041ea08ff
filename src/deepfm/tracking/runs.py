"""MLflow runs: a training's run (`RunTracker`) and the finished runs `evaluate` adds to."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import pandas as pd
import pyarrow.parquet as pq
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from deepfm.tracking.pyfunc import log_pyfunc
from deepfm.tracking.store import (
    TrackingError,
    check_tracking_server,
    open_experiment,
    store_lock,
    tracking_uri,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
PARENT_TAG = "mlflow.parentRunId"


class RunTracker:
    """One MLflow training run, active in this process until the `with` block ends.

    Use `RunTracker.start(...)` for a new run or `RunTracker.resume(run_id)` to continue
    a training's run; the run ends FINISHED, KILLED if the block ends by
    `KeyboardInterrupt` (Ctrl-C, or SIGTERM as the train stage turns it), else FAILED if
    it raises.

    Args:
        run: the active MLflow run (what `start` and `resume` open).

    Example::

        with RunTracker.start("deepfm-movielens", "fm-seed-42", params, tags) as run:
            run.log_epoch({"train_loss": 0.52, "val_auc": 0.78}, step=1)
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
        """Log `CTRPyfunc` as the run's model `model` (see `log_pyfunc`); its `models:/` URI."""
        return log_pyfunc(model_pt, vocab_dir, input_example)

    def register_model(self, model_uri: str, name: str, val_auc: float, val_digest: str) -> str:
        """Register `model_uri` as a new version of `name`; move `champion` to the best
        version by validation AUC among those with this `val_digest`. The version."""
        uri = tracking_uri()
        client = mlflow.MlflowClient(uri)
        tags = {"val_auc": repr(val_auc), "val_digest": val_digest}
        with store_lock(uri):  # two trainings must not both create the registered model
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
        mlflow.end_run(end_status(exc_type))


class FinishedRuns:
    """The training runs `evaluate` adds to: never reopened, so each keeps its status, end
    time and duration; and the parent run that groups one model's seed runs.

    Example::

        runs = FinishedRuns()  # the store of `MLFLOW_TRACKING_URI`, checked
        runs.check(run_id, Path("models/fm/seed-42/run.json"))
        runs.add(run_id, {"test_auc": 0.79}, [Path("roc.png")])
    """

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
            # The parent spans its seed runs, so its duration is theirs from first to last.
            parent = self.client.create_run(
                runs[0].info.experiment_id,
                start_time=min(run.info.start_time for run in runs),
                run_name=run_name,
                tags={"seeds": str(len(runs))},
            )
            parent_id = parent.info.run_id
            end = max(run.info.end_time or run.info.start_time for run in runs)
            self.client.set_terminated(parent_id, "FINISHED", end_time=end)
            for run_id in run_ids:
                self.client.set_tag(run_id, PARENT_TAG, parent_id)
        self.add(parent_id, metrics, files)
        return parent_id


def end_status(exc_type: type[BaseException] | None) -> str:
    """How a run's `with` block ended, as MLflow's run status: FINISHED, KILLED (Ctrl-C or
    SIGTERM, raised as `KeyboardInterrupt`) or FAILED."""
    if exc_type is None:
        return "FINISHED"
    return "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"


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
