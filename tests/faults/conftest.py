"""Fixtures of the fault suite: a local HTTP server and project folders to run stages in."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import make_workspace, small_data_config
from deepfm.data.raw import write_raw
from deepfm.data.releases.ml100k import parse_ml100k
from faults.processes import Stopped, run_stage, store_env
from movielens_fixtures import write_ml100k_folder


@pytest.fixture
def stop_at(tmp_path: Path) -> Iterator[Callable[..., Stopped]]:
    """`stop_at(work, point, script, *args, env=None)` starts `script` stopped at `point`
    (see `Stopped`); any still running when the test ends are killed."""
    started: list[Stopped] = []

    def start(
        work: Path, point: str, script: str, *args: str, env: dict[str, str] | None = None
    ) -> Stopped:
        marker = tmp_path / f"stopped-{len(started)}"
        started.append(Stopped(work, point, marker, script, *args, env=env))
        return started[-1]

    yield start
    for stopped in started:
        if stopped.process.poll() is None:
            stopped.process.kill()
            stopped.process.wait()


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared project folder (see `make_workspace`) that trains on the CPU, with an
    empty MLflow store `mlflow.db` (see `store_env`), built once; tests copy it."""
    root = tmp_path_factory.mktemp("template")
    data = small_data_config(root)
    write_raw(parse_ml100k(write_ml100k_folder(root / "release")), data.raw_path, data.dataset)
    work = make_workspace(root / "work", Path(data.raw_dir))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["device"] = "cpu"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}").search_experiments()  # makes the store
    return work


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of `template` for one test."""
    return shutil.copytree(template, tmp_path / "work")


@pytest.fixture(scope="session")
def reference_run(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `template` after one uninterrupted `train` (deepfm, seed 42, 2 epochs, CPU)."""
    work = shutil.copytree(template, tmp_path_factory.mktemp("reference") / "work")
    result = run_stage(
        work, "train", "--model", "deepfm", "--seed", "42", env=store_env(work / "mlflow.db")
    )
    assert result.returncode == 0, result.stderr
    return work
