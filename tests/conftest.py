"""Shared fixtures: small MovieLens-format data, raw and prepared, in a temp folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from deepfm.config import DataConfig, ExperimentConfig
from deepfm.data.prepare import prepare
from deepfm.data.raw import write_raw
from deepfm.data.releases.ml100k import parse_ml100k
from local_server import Server
from movielens_fixtures import write_ml100k_folder

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_tracking_uri_leaks() -> Iterator[None]:
    """`mlflow.set_tracking_uri` (which the tracking code calls) is process-wide and also sets
    MLFLOW_TRACKING_URI; undo both after every test so no test talks to another's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


def small_data_config(root: Path, **changes) -> DataConfig:
    return replace(
        DataConfig(raw_dir=str(root / "raw"), processed_dir=str(root / "processed")), **changes
    )


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def raw_config(tmp_path) -> DataConfig:
    """A DataConfig whose raw folder holds a small ml-100k (50 users, 60 movies, 2000 ratings)."""
    data = small_data_config(tmp_path)
    tables = parse_ml100k(write_ml100k_folder(tmp_path / "release"))
    write_raw(tables, data.raw_path, data.dataset)
    return data


@pytest.fixture
def small_config(raw_config) -> ExperimentConfig:
    """The default experiment pointed at the small raw data (not yet prepared)."""
    return replace(ExperimentConfig(), data=raw_config)


def make_workspace(work: Path, raw_dir: Path) -> Path:
    """A project folder like the repo's: params.yaml (deepfm only, seed 42, 2 epochs, batch
    256) and the small data, raw (moved in from `raw_dir`) and prepared, under data/."""
    (work / "data").mkdir(parents=True)
    raw_dir.rename(work / "data" / "raw")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].pop("seed", None)  # params.yaml before `train.seeds`
    params["train"].update(models=["deepfm"], seeds=[42], max_epochs=2, batch_size=256)
    params["tune"]["models"] = []  # no reports/tuning/<model>.yaml here
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    data = replace(
        config.data, raw_dir=str(work / "data/raw"), processed_dir=str(work / "data/processed")
    )
    prepare(data, config.feature)
    return work


@pytest.fixture
def workspace(tmp_path, small_config) -> Path:
    """`make_workspace` in a temp folder. Stage scripts run with it as cwd."""
    return make_workspace(tmp_path / "work", Path(small_config.data.raw_dir))


def run(repo: Path, *command: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_dvc_repo(tmp_path: Path) -> Path:
    """A Git + DVC repo with the project's pipeline, deepfm only, and a small raw ml-100k
    committed as the `download` stage's output (as if downloaded), in `tmp_path / "repo"`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=ignore)
    shutil.copytree(ROOT / "src" / "deepfm", repo / "src" / "deepfm", ignore=ignore)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(models=["deepfm"], seeds=[42, 43], max_epochs=2, batch_size=256)
    params["tune"]["models"] = []  # no tuned rows (tests/test_tuned_rows.py adds one)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    tables = parse_ml100k(write_ml100k_folder(tmp_path / "release"))
    write_raw(tables, repo / "data" / "raw" / "ml-100k", "ml-100k")

    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "dvc", "init", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run(repo, "dvc", "commit", "-f", "download")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "pipeline and raw data")
    return repo


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """`make_dvc_repo` in this test's temp folder."""
    return make_dvc_repo(tmp_path)


@pytest.fixture(scope="session")
def reproduced_repo_template(tmp_path_factory) -> Path:
    """`make_dvc_repo` after `dvc repro`, its results committed as "baseline": made once per
    test process (each xdist worker that needs it), copied for each test."""
    repo = make_dvc_repo(tmp_path_factory.mktemp("reproduced"))
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    return repo


@pytest.fixture
def reproduced_repo(reproduced_repo_template, tmp_path) -> Path:
    """A copy of `reproduced_repo_template` of this test's own (its MLflow experiment still
    keeps artifacts in the template's `mlartifacts/`: MLflow records that path absolute)."""
    repo = tmp_path / "repo"
    shutil.copytree(reproduced_repo_template, repo, symlinks=True)
    return repo
