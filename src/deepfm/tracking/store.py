"""Where MLflow runs are stored: the tracking URI, the store's health, the experiment."""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

from deepfm.errors import UserError

HEALTH_TIMEOUT_S = 5.0
SQLITE_PREFIX = "sqlite:///"


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used; the message names it.

    Example::

        raise TrackingError(f"{uri}: the MLflow store cannot be opened ({err})")
    """


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
        with store_lock(uri):
            return _experiment_id(uri, experiment_name)
    except Exception as err:  # whatever the store's backend raises: one line naming it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be used for experiment "
            f"{experiment_name!r} (tracking.experiment_name): {reason}"
        ) from err


def default_tags(data_fingerprint: str, device: str) -> dict[str, str]:
    """Run tags: git commit, DVC experiment (under `dvc exp run`), data, device, torch, and on
    the CPU the kind of CPU (`cpu_kind`): runs agree bit for bit only within one kind."""
    tags = {
        "git_commit": _git_commit(),
        "data_fingerprint": data_fingerprint,
        "device": device,
        "torch_version": torch.__version__,
    }
    if device == "cpu":
        tags["cpu_kind"] = cpu_kind()
    # `dvc exp run` sets DVC_EXP_NAME (given or generated) in every stage's environment.
    if dvc_experiment := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = dvc_experiment
    return tags


def cpu_kind() -> str:
    """What decides how this machine's CPU kernels round, e.g. `AuthenticAMD, AVX2, 2 threads`:
    the CPU vendor, the widest kernels PyTorch runs on it and the number of threads. MKL picks
    its matrix-multiply kernels by the first and the last, PyTorch its vectorised ones by the
    second; CPU runs with the same params give the same bits on the same kind only
    (docs/reliability.md, "Across CPUs")."""
    vendor = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            vendors = (line.split(":", 1)[1] for line in handle if line.startswith("vendor_id"))
            vendor = next(vendors, vendor).strip()
    except OSError:  # no /proc (not Linux): the architecture stands in for the vendor
        pass
    return f"{vendor}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


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
def store_lock(uri: str) -> Iterator[None]:
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


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
