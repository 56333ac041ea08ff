"""Scoring files of raw rows: `python -m deepfm score`, its errors, and agreement with
the MLflow pyfunc and the evaluate stage."""

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from deepfm.__main__ import main
from deepfm.config import SEED_FIELDS, ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepare import prepare, raw_feature_frame, split_rows
from deepfm.data.raw import read_raw
from deepfm.metrics import log_loss
from deepfm.models.registry import MODELS, build_model, load_model, save_model
from deepfm.tracking import RunTracker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_dir(tmp_path, small_config) -> Path:
    """An untrained (seeded) DeepFM saved as `train` saves it, over the small prepared data."""
    schema = prepare(small_config.data, small_config.feature)
    torch.manual_seed(0)
    model = build_model("deepfm", schema, small_config)
    folder = tmp_path / "models" / "deepfm"
    save_model(folder / "model.pt", "deepfm", model, schema, small_config)
    return folder


@pytest.fixture
def raw_rows(small_config) -> pd.DataFrame:
    raw = read_raw(small_config.data.raw_path)
    return raw_feature_frame(raw, np.arange(raw.ratings.num_rows), SEED_FIELDS)


def score_args(model_dir: Path, rows: Path, scores: Path, *extra: str) -> list[str]:
    return [
        "score",
        "--model",
        str(model_dir),
        "--input",
        str(rows),
        "--output",
        str(scores),
        *extra,
    ]


def score(model_dir: Path, frame: pd.DataFrame, tmp_path: Path, **options) -> pd.DataFrame:
    """Run the CLI in-process on `frame` written as Parquet; return the output file."""
    frame.to_parquet(tmp_path / "rows.parquet")
    extra = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    main(score_args(model_dir, tmp_path / "rows.parquet", tmp_path / "scores.parquet", *extra))
    return pd.read_parquet(tmp_path / "scores.parquet")


def user_error(model_dir: Path, frame: pd.DataFrame, tmp_path: Path, caplog) -> str:
    """The one-line error the CLI exits 1 with; no output file is left."""
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        score(model_dir, frame, tmp_path)
    assert exit_info.value.code == 1
    assert not (tmp_path / "scores.parquet").exists()
    assert list(tmp_path.glob("*.tmp*")) == []
    return caplog.records[-1].getMessage()


def test_every_row_is_scored_in_order_across_batches(model_dir, raw_rows, tmp_path):
    scores = score(model_dir, raw_rows, tmp_path, batch_rows=300)
    assert len(scores) == len(raw_rows) == 2000
    pd.testing.assert_frame_equal(scores.drop(columns="probability"), raw_rows)
    assert scores["probability"].dtype == np.float32
    # Batches of 300 and one batch of everything give the same numbers (up to float32
    # rounding: the matmul kernels block differently for other batch sizes).
    whole = score(model_dir, raw_rows, tmp_path, batch_rows=5000)
    np.testing.assert_allclose(scores["probability"], whole["probability"], atol=1e-6)
    assert scores["probability"].between(0, 1).all()


def test_unseen_and_missing_values_score_as_oov(model_dir, raw_rows, tmp_path):
    known = raw_rows.iloc[[0]].reset_index(drop=True)
    unseen = known.assign(
        user_id=10**6, movie_id=10**6, gender="X", age=np.nan, occupation="astronaut"
    )
    unseen["zip_code"] = "ZZZZZ"
    unseen["genres"] = [["Not a genre"]]
    nulls = known.assign(user_id=np.nan, movie_id=np.nan, gender=None, age=np.nan)
    nulls["occupation"] = None
    nulls["zip_code"] = None
    nulls["genres"] = [[]]
    frame = pd.concat([known, unseen, nulls], ignore_index=True)
    scores = score(model_dir, frame, tmp_path)["probability"].to_numpy()

    # Both rows are all-OOV: the model's output for index 0 in every field, built here
    # from the schema alone (no encoder), and not the known row's score.
    saved = load_model(model_dir / "model.pt")
    all_oov = {
        name: torch.zeros((1, spec.max_len) if name == "genres" else (1,), dtype=torch.long)
        for name, spec in saved.schema.fields.items()
    }
    with torch.no_grad():
        expected = torch.sigmoid(saved.model.eval()(all_oov)).numpy()
    np.testing.assert_allclose(scores[1:], np.repeat(expected, 2), atol=1e-7)
    assert abs(scores[0] - expected[0]) > 1e-4


def test_missing_column_is_an_error_naming_it(model_dir, raw_rows, tmp_path, caplog):
    message = user_error(model_dir, raw_rows.drop(columns=["zip_code"]), tmp_path, caplog)
    assert "rows.parquet" in message and "missing required column(s) ['zip_code']" in message


def test_wrong_kind_of_column_is_an_error_naming_it(model_dir, raw_rows, tmp_path, caplog):
    as_text = raw_rows.assign(user_id=raw_rows["user_id"].astype(str))
    message = user_error(model_dir, as_text, tmp_path, caplog)
    assert "'user_id' must hold numbers" in message and "rows 0-" in message
    as_number = raw_rows.assign(gender=1)
    assert "'gender' must hold text" in user_error(model_dir, as_number, tmp_path, caplog)


def test_not_parquet_and_empty_input(model_dir, raw_rows, tmp_path, caplog):
    (tmp_path / "rows.parquet").write_text("user_id,movie_id\n1,2\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        main(score_args(model_dir, tmp_path / "rows.parquet", tmp_path / "scores.parquet"))
    assert "not a readable Parquet file" in caplog.records[-1].getMessage()
    # Zero rows in, zero rows out, with the probability column.
    empty = score(model_dir, raw_rows.iloc[:0], tmp_path)
    assert len(empty) == 0 and "probability" in empty.columns


def test_vocabularies_of_another_prepare_run_are_refused(
    model_dir, small_config, raw_rows, tmp_path, caplog
):
    other = replace(small_config.data, processed_dir=str(tmp_path / "other"))
    prepare(other, replace(small_config.feature, min_count=40))
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        score(model_dir, raw_rows, tmp_path, vocab_dir=other.processed_path / "vocab")
    assert "from another prepare run" in caplog.records[-1].getMessage()


@pytest.mark.slow
def test_cli_pyfunc_and_evaluate_stage_agree(workspace, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for stage, seed in (("train.py", ["--seed", "42"]), ("evaluate.py", [])):
        subprocess.run(
            [sys.executable, str(ROOT / "stages" / stage), "--model", "deepfm", *seed],
            cwd=workspace,
            check=True,
            capture_output=True,
        )
    config = ExperimentConfig.from_yaml(workspace / "params.yaml")
    raw = read_raw(workspace / config.data.raw_path)
    test_rows = split_rows(raw.ratings["timestamp"].to_numpy(), config.data)["test"]
    raw_feature_frame(raw, test_rows, SEED_FIELDS).to_parquet(tmp_path / "test_rows.parquet")

    # The console script, as a user runs it from the project root.
    cli_args = score_args(
        Path("models/deepfm/seed-42"), tmp_path / "test_rows.parquet", tmp_path / "s.parquet"
    )
    subprocess.run(
        [sys.executable, "-m", "deepfm", *cli_args],
        cwd=workspace,
        check=True,
        capture_output=True,
    )
    cli = pd.read_parquet(tmp_path / "s.parquet")["probability"].to_numpy()

    run_id = json.loads((workspace / "models/deepfm/seed-42/run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(uri)  # earlier tests in this process may have pointed it elsewhere
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    served = np.asarray(pyfunc.predict(raw_feature_frame(raw, test_rows, SEED_FIELDS)))

    saved = load_model(workspace / "models/deepfm/seed-42/model.pt")
    test = CTRDataset.from_parquet(workspace / "data/processed/ml-100k/test.parquet", saved.schema)
    with torch.no_grad():
        logits = saved.model(test.batch(torch.arange(len(test)))[0])
    staged = torch.sigmoid(logits).numpy()

    np.testing.assert_allclose(cli, staged, atol=1e-6)
    np.testing.assert_allclose(served, staged, atol=1e-6)
    report = json.loads((workspace / "reports/models/deepfm/metrics.json").read_text())
    cli_logloss = log_loss(test.labels, torch.logit(torch.tensor(cli, dtype=torch.float64)))
    assert cli_logloss == pytest.approx(report["seeds"]["42"]["test_logloss"], abs=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_scores_raw_rows_as_it_scores_the_prepared_test_split(
    name, tmp_path, small_config, monkeypatch
):
    """`deepfm score` and the logged MLflow pyfunc, on raw rows, give each registered model's
    own probabilities for the same rows as `prepare` encoded them."""
    schema = prepare(small_config.data, small_config.feature)
    torch.manual_seed(0)
    model = build_model(name, schema, small_config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)  # far from the near-constant initial output
    folder = tmp_path / "models" / name
    save_model(folder / "model.pt", name, model, schema, small_config)
    raw = read_raw(small_config.data.raw_path)
    test_rows = split_rows(raw.ratings["timestamp"].to_numpy(), small_config.data)["test"]
    frame = raw_feature_frame(raw, test_rows, SEED_FIELDS)

    scored = score(folder, frame, tmp_path)["probability"].to_numpy()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with RunTracker.start("serving-test", name, {}, {}) as run:
        uri = run.log_model(folder / "model.pt", small_config.data.processed_path / "vocab", frame)
    served = np.asarray(mlflow.pyfunc.load_model(uri).predict(frame))

    test = CTRDataset.from_parquet(small_config.data.processed_path / "test.parquet", schema)
    model.eval()
    with torch.no_grad():
        own = torch.sigmoid(model(test.batch(torch.arange(len(test)))[0])).numpy()
    assert own.std() > 0.05  # the rows get distinct scores, so a mix-up would show
    np.testing.assert_allclose(scored, own, atol=1e-6)
    np.testing.assert_allclose(served, own, atol=1e-6)
