"""MLflow runs of a tuning study (`deepfm tune`): one parent run, one nested run per trial.

The parent run (`tune-<model>`, tag `kind=tuning-study`) spans the study: a resumed study
reopens it by id rather than starting another. Each trial is a child run `trial-<n>` (tag
`mlflow.parentRunId`, which the UI nests; tag `kind=tuning-trial`) with the sampled values
as params under their dotted keys, `val_auc` and `val_logloss` per epoch (step = epoch),
`best_val_auc`, a tag `state`: COMPLETE or PRUNED (the run ends FINISHED), or FAIL (the
run ends FAILED, or KILLED when the command was stopped or killed), and for the latter two
a tag `reason`. Trials log no model.

All runs are written through `MlflowClient` by id, so no run is ever the process's active
run and a trial's run and its parent can be open together.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from deepfm.tracking.runs import PARENT_TAG, end_status
from deepfm.tracking.store import open_experiment, tracking_uri

logger = logging.getLogger(__name__)

STUDY_KIND, TRIAL_KIND = "tuning-study", "tuning-trial"
STALE_REASON = "left running by a command that was killed"
# A trial's Optuna state -> how its run ends.
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}


class StudyRun:
    """The parent run of one tuning study, open (RUNNING) until the `with` block ends.

    `StudyRun.open(...)` reopens the study's run if the store has it, else starts one. The
    run ends FINISHED, KILLED if the block ends by `KeyboardInterrupt`, else FAILED.

    Args:
        client: the store's client.
        run_id: the parent run's id.

    Example::

        with StudyRun.open("deepfm-movielens", "deepfm", "deepfm-ml-100k", "", tags) as study:
            trial = study.start_trial(0, {"train.lr": 0.003})
            trial.log_epoch(1, val_auc=0.77, val_logloss=0.55)
            trial.end("COMPLETE", best_val_auc=0.77)
            study.log_summary({"best_val_auc": 0.77}, [Path("reports/tuning/deepfm.yaml")])
    """

    def __init__(self, client: mlflow.MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def open(
        cls, experiment_name: str, model: str, study_name: str, run_id: str, tags: dict[str, str]
    ) -> StudyRun:
        """Run `run_id` set RUNNING again if the store has it (a resumed study), else a new
        run `tune-<model>` in `experiment_name` with `tags`."""
        experiment_id = open_experiment(experiment_name)
        uri = tracking_uri()
        client = mlflow.MlflowClient(uri)
        if run_id and _exists(client, run_id):
            client.update_run(run_id, status="RUNNING")
            logger.info("continuing MLflow run %s of study %s", run_id, study_name)
            return cls(client, run_id)
        if run_id:
            logger.warning(
                "MLflow run %s of study %s is not in %s; a new run", *(run_id, study_name, uri)
            )
        tags = tags | {"kind": STUDY_KIND, "model": model, "study": study_name}
        run = client.create_run(experiment_id, tags=tags, run_name=f"tune-{model}")
        logger.info(
            "MLflow run %s (tune-%s) in %r at %s", run.info.run_id, model, experiment_name, uri
        )
        return cls(client, run.info.run_id)

    def start_trial(self, number: int, params: dict[str, Any]) -> TrialRun:
        """A new child run `trial-<number>`, RUNNING, with `params` (dotted keys)."""
        parent = self.client.get_run(self.run_id)
        tags = {
            PARENT_TAG: self.run_id,
            "kind": TRIAL_KIND,
            "trial": str(number),
            "state": "RUNNING",
        } | {k: v for k, v in parent.data.tags.items() if k in ("model", "study")}
        run = self.client.create_run(
            parent.info.experiment_id, tags=tags, run_name=f"trial-{number}"
        )
        trial = TrialRun(self.client, run.info.run_id)
        self.client.log_batch(
            trial.run_id, params=[Param(key, str(value)) for key, value in params.items()]
        )
        return trial

    def end_stale_trial(self, run_id: str) -> None:
        """End the run of a trial that a killed command left RUNNING: state FAIL, KILLED."""
        if _exists(self.client, run_id):
            TrialRun(self.client, run_id).end("FAIL", reason=STALE_REASON, killed=True)

    def log_summary(self, metrics: dict[str, float], files: list[Path]) -> None:
        """Log `metrics` and `files` (at the artifact root) to the parent run."""
        _log_metrics(self.client, self.run_id, metrics)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def __enter__(self) -> StudyRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.client.set_terminated(self.run_id, end_status(exc_type))


class TrialRun:
    """The run of one trial, a child of its study's run (see `StudyRun.start_trial`).

    Args:
        client: the store's client.
        run_id: the trial run's id.

    Example::

        trial = study.start_trial(3, {"model.deepfm.dropout": 0.2})
        trial.log_epoch(1, val_auc=0.75, val_logloss=0.57)
        trial.end("PRUNED", best_val_auc=0.75)
    """

    def __init__(self, client: mlflow.MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_epoch(self, epoch: int, val_auc: float, val_logloss: float) -> None:
        _log_metrics(
            self.client, self.run_id, {"val_auc": val_auc, "val_logloss": val_logloss}, epoch
        )

    def end(
        self,
        state: str,
        best_val_auc: float | None = None,
        reason: str = "",
        killed: bool = False,
    ) -> None:
        """Tag Optuna's `state` (COMPLETE, PRUNED or FAIL) and why it ended so (`reason`,
        if given), log `best_val_auc` if any, and end the run: FINISHED, FAILED, or KILLED
        when `killed`."""
        if best_val_auc is not None:
            _log_metrics(self.client, self.run_id, {"best_val_auc": best_val_auc})
        if reason:
            self.client.set_tag(self.run_id, "reason", reason)
        self.client.set_tag(self.run_id, "state", state)
        self.client.set_terminated(self.run_id, "KILLED" if killed else _RUN_STATUS[state])


def _log_metrics(
    client: mlflow.MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0
) -> None:
    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()]
    )


def _exists(client: mlflow.MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True
