"""Shared fixtures: small MovieLens-format data, raw and prepared, in a temp folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

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
