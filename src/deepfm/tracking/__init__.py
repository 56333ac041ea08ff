"""MLflow tracking: where runs are stored, and each training's run, datasets and model.

This package is the only code that imports mlflow: `store.py` (the URI, the store's health,
the experiment), `runs.py` (`RunTracker`, `FinishedRuns`), `pyfunc.py` (`CTRPyfunc`, the
logged model) and `studies.py` (`StudyRun`, `TrialRun`: a `deepfm tune` study's parent run
and its nested trial runs). Runs go to `MLFLOW_TRACKING_URI` when it is set (a SQLite file,
or a shared `mlflow server` over http), else to the SQLite store `mlflow.db` in the project root,
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

from deepfm.tracking.pyfunc import CTRPyfunc
from deepfm.tracking.runs import CHAMPION, FinishedRuns, RunTracker, file_digest
from deepfm.tracking.store import (
    TrackingError,
    check_tracking_server,
    cpu_kind,
    default_tags,
    open_experiment,
    tracking_uri,
)
from deepfm.tracking.studies import StudyRun, TrialRun

__all__ = [
    "CHAMPION",
    "CTRPyfunc",
    "FinishedRuns",
    "RunTracker",
    "StudyRun",
    "TrackingError",
    "TrialRun",
    "check_tracking_server",
    "cpu_kind",
    "default_tags",
    "file_digest",
    "open_experiment",
    "tracking_uri",
]
