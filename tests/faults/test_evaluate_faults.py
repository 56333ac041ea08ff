"""`evaluate` given inputs it must not score: one line, before any report is written."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deepfm.config import ExperimentConfig
from deepfm.data.prepare import prepare
from faults.processes import run_stage, store_env

MODEL = ("--model", "deepfm")
PROCESSED = Path("data/processed/ml-100k")


def reprepare_with_min_count(work: Path, min_count: int) -> None:
    """Prepare the same raw data again, in place, with another `feature.min_count`."""
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    data = replace(
        config.data, raw_dir=str(work / "data/raw"), processed_dir=str(work / "data/processed")
    )
    prepare(data, replace(config.feature, min_count=min_count))


def empty_test_split(work: Path) -> None:
    table = pq.read_table(work / PROCESSED / "test.parquet")
    pq.write_table(table.slice(0, 0), work / PROCESSED / "test.parquet")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("breaks", "store", "message"),
    [
        (
            lambda work: reprepare_with_min_count(work, 20),
            "mlflow.db",
            f"{PROCESSED} (schema.json and vocab/) is not the prepared data "
            "models/deepfm/seed-42/model.pt was trained on; train it again on this data, or "
            "prepare the data it was trained on",
        ),
        (
            None,
            "fresh.db",
            "models/deepfm/seed-42/run.json names MLflow run {run_id}, which the tracking store "
            "sqlite:///{work}/fresh.db does not have (a fresh clone, or another "
            "MLFLOW_TRACKING_URI); train again or point MLFLOW_TRACKING_URI at the store that "
            "has it",
        ),
        (
            empty_test_split,
            "mlflow.db",
            f"{PROCESSED}/test.parquet has no rows: there is nothing to evaluate",
        ),
    ],
    ids=["prepared data not the model's", "run not in the store", "test split with 0 rows"],
)
def test_evaluate_refuses_in_one_line_before_writing_reports(
    reference_run, tmp_path, breaks, store, message
):
    work = shutil.copytree(reference_run, tmp_path / "work")
    if breaks is not None:
        breaks(work)
    run_id = (work / "models/deepfm/seed-42/run.json").read_text().split('"')[3]

    result = run_stage(work, "evaluate", *MODEL, env=store_env(work / store))

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(message.format(run_id=run_id, work=work))
    assert not (work / "reports").exists()
