"""Raw-feature encoding, the predictor and the logged MLflow pyfunc model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from deepfm import serving
from deepfm.config import SEED_FIELDS, DataConfig, ExperimentConfig, FeatureConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.features import Vocabulary
from deepfm.data.fields import FIELD_DEFS
from deepfm.data.prepare import load_vocabularies, prepare, raw_feature_frame, split_rows
from deepfm.data.raw import read_raw
from deepfm.data.schema import FieldSpec, Schema
from deepfm.models.registry import build_model
from deepfm.serving import CTRPredictor, RawFeatureEncoder
from deepfm.tracking import RunTracker

# Training values per field; distinct counts fix each vocabulary's order (most frequent = 1).
TRAIN_VALUES = {
    "user_id": [7, 7, 7, 3, 3, 5],
    "movie_id": [42, 42, 11],
    "gender": ["M", "M", "F"],
    "age": ["25-34", "25-34", "18-24"],
    "occupation": ["writer", "writer", "student"],
    "zip_prefix": ["554", "554", "100"],
    "genres": ["Drama", "Drama", "Drama", "Comedy", "Comedy", "Action"],
}
FEATURE = FeatureConfig(genres_max_len=3)


def raw_frame() -> pd.DataFrame:
    """Four raw rows: known values, unseen values, and genre lists short and long."""
    return pd.DataFrame(
        {
            "user_id": [7, 3, 999, 5],
            "movie_id": [42, 11, 42, 0],
            "gender": ["M", "F", "X", "F"],
            "age": [30, 20, 70, 25],
            "occupation": ["writer", "student", "pilot", "writer"],
            "zip_code": ["55455", " 10011 ", "K1A 0B1", "554"],
            "genres": [["Action", "Drama", "Comedy", "Drama"], ["Comedy"], ["Western"], []],
        }
    )


@dataclass
class SavedModel:
    model_pt: Path
    vocab_dir: Path
    model: nn.Module
    encoder: RawFeatureEncoder

    def torch_probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(self.model(self.encoder.encode(frame))).numpy()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    """`model.pt` and `vocab/` as `train` and `prepare` write them, for a small DeepFM."""
    folder = tmp_path_factory.mktemp("saved")
    vocabs = {name: Vocabulary.fit(pd.Series(values)) for name, values in TRAIN_VALUES.items()}
    vocab_dir = folder / "vocab"
    vocab_dir.mkdir()
    for name, vocab in vocabs.items():
        pq.write_table(vocab.to_arrow(), vocab_dir / f"{name}.parquet")
    specs = [
        FieldSpec(name, FIELD_DEFS[name].kind, vocab.size, 4, FIELD_DEFS[name].length(FEATURE))
        for name, vocab in vocabs.items()
    ]
    schema = Schema.of(specs)
    config = ExperimentConfig()
    torch.manual_seed(0)
    model = build_model("deepfm", schema, config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)  # far from the near-constant initial output
    model_pt = folder / "model.pt"
    torch.save(
        {
            "model": "deepfm",
            "state_dict": model.state_dict(),
            "schema": schema.to_dict(),
            "config": config.to_dict(),
        },
        model_pt,
    )
    encoder = RawFeatureEncoder(schema, vocabs, config.feature)
    return SavedModel(model_pt, vocab_dir, model.eval(), encoder)


def test_encoder_applies_prepare_transforms(saved: SavedModel) -> None:
    batch = saved.encoder.encode(raw_frame())

    assert all(tensor.dtype == torch.int64 for tensor in batch.values())
    assert batch["user_id"].tolist() == [1, 2, 0, 3]
    assert batch["movie_id"].tolist() == [1, 2, 1, 0]
    assert batch["gender"].tolist() == [1, 2, 0, 2]
    # 30 -> "25-34", 20 -> "18-24", 70 -> "56+" (unseen), 25 -> "25-34"
    assert batch["age"].tolist() == [1, 2, 0, 1]
    assert batch["occupation"].tolist() == [1, 2, 0, 1]
    # Stripped, upper-cased, first 3 characters: "554", "100", "K1A" (unseen), "554".
    assert batch["zip_prefix"].tolist() == [1, 2, 0, 1]
    # Drama 1, Comedy 2, Action 3; the first max_len genres, then 0 padding.
    assert batch["genres"].tolist() == [[3, 1, 2], [2, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_encoder_maps_missing_values_to_oov_and_keeps_rows(saved: SavedModel) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [7.0, np.nan],
            "movie_id": [None, 42],
            "gender": [None, "M"],
            "age": [np.nan, 30],
            "occupation": ["writer", None],
            "zip_code": [None, "55455"],
            "genres": [None, ["Drama", None]],
        }
    )

    batch = saved.encoder.encode(frame)

    assert batch["user_id"].tolist() == [1, 0]
    assert batch["movie_id"].tolist() == [0, 1]
    assert batch["gender"].tolist() == [0, 1]
    assert batch["age"].tolist() == [0, 1]
    assert batch["occupation"].tolist() == [1, 0]
    assert batch["zip_prefix"].tolist() == [0, 1]
    assert batch["genres"].tolist() == [[0, 0, 0], [1, 0, 0]]


def test_encoder_names_missing_columns(saved: SavedModel) -> None:
    with pytest.raises(ValueError, match=r"\['age', 'zip_code'\]"):
        saved.encoder.encode(raw_frame().drop(columns=["zip_code", "age"]))


def test_encoder_reproduces_prepared_splits(raw_config: DataConfig) -> None:
    """Raw rows encoded at serving time equal what `prepare` wrote for them."""
    feature = FeatureConfig()
    schema = prepare(raw_config, feature)
    raw = read_raw(raw_config.raw_path)
    vocabs = load_vocabularies(raw_config.processed_path, schema)
    encoder = RawFeatureEncoder(schema, vocabs, feature)
    rows = split_rows(raw.ratings.column("timestamp").to_numpy(), raw_config)

    for split in ("train", "test"):
        prepared = CTRDataset.from_parquet(raw_config.processed_path / f"{split}.parquet", schema)
        batch = encoder.encode(raw_feature_frame(raw, rows[split], SEED_FIELDS))
        for name, column in prepared.columns.items():
            assert torch.equal(batch[name], column.long()), (split, name)


def test_predictor_matches_torch_model_across_batches(
    saved: SavedModel,
) -> None:
    frame = raw_frame()

    predictor = CTRPredictor.from_files(saved.model_pt, saved.vocab_dir)
    probabilities = predictor.predict(frame, batch_size=3)

    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, saved.torch_probabilities(frame), rtol=1e-6)
    assert len(np.unique(probabilities)) == len(frame)


@pytest.fixture(scope="module")
def model_uri(saved: SavedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`runs:/<id>/model` in a fresh SQLite store; MLFLOW_TRACKING_URI names it meanwhile."""
    store = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        with RunTracker.start("serving-test", "deepfm", {}, {}) as run:
            uri = run.log_model(saved.model_pt, saved.vocab_dir, raw_frame())
        yield uri


def test_logged_pyfunc_matches_torch_model(saved: SavedModel, model_uri: str) -> None:
    frame = raw_frame()

    loaded = mlflow.pyfunc.load_model(model_uri)

    inputs = {spec["name"]: spec for spec in loaded.metadata.signature.inputs.to_dict()}
    assert inputs["genres"]["type"] == "array"
    assert inputs["genres"]["items"] == {"type": "string"}
    assert inputs["age"]["type"] == "long"
    np.testing.assert_allclose(loaded.predict(frame), saved.torch_probabilities(frame), rtol=1e-6)


def test_logged_model_pins_its_requirements(model_uri: str) -> None:
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text()

    names = {line.split("==")[0] for line in requirements.split()}
    assert names == {"mlflow", *serving.SERVING_PACKAGES}  # deepfm travels as code


@pytest.mark.slow
def test_mlflow_models_predict_cli(saved: SavedModel, model_uri: str, tmp_path: Path) -> None:
    frame = raw_frame()
    request = tmp_path / "example.json"
    request.write_text(json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}))
    output = tmp_path / "predictions.json"
    # The command inherits MLFLOW_TRACKING_URI, which `model_uri` sets for this module.
    command = [Path(sys.executable).parent / "mlflow", "models", "predict", "-m", model_uri]
    command += ["-i", request, "-o", output, "--env-manager", "local"]

    subprocess.run(command, check=True, capture_output=True, timeout=120)

    predictions = json.loads(output.read_text())["predictions"]
    np.testing.assert_allclose(predictions, saved.torch_probabilities(frame), rtol=1e-6)
