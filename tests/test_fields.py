"""Fields described by their spec (`FIELD_DEFS`): one entry makes a field that prepare,
the embedding, training, serving and the MLflow pyfunc all take."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from deepfm.config import SEED_FIELDS, ConfigError, DataConfig, ExperimentConfig, FeatureConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.features import Vocabulary
from deepfm.data.fields import FIELD_DEFS, FieldDef
from deepfm.data.prepare import load_vocabularies, prepare, raw_feature_frame, split_rows
from deepfm.data.raw import read_raw
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.registry import build_model
from deepfm.serving import CTRPredictor, RawFeatureEncoder, ServingError
from faults.processes import run_stage as stage_command

ROOT = Path(__file__).resolve().parents[1]


def title_length(titles: pd.Series, feature: FeatureConfig) -> pd.Series:
    """Characters in the title, in tens ('10', '20', ...)."""
    return (titles.str.len() // 10 * 10).astype("string")


def title_words(titles: pd.Series, feature: FeatureConfig) -> pd.Series:
    """The title's lower-cased words."""
    return titles.str.lower().str.split()


@pytest.fixture
def title_fields(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Two throwaway fields of the movie's title, each one entry in `FIELD_DEFS`."""
    monkeypatch.setitem(
        FIELD_DEFS,
        "title_length",
        FieldDef("title_length", "item", "title", title_length, raw_kind="any"),
    )
    monkeypatch.setitem(
        FIELD_DEFS,
        "title_words",
        FieldDef(
            "title_words",
            "item",
            "title",
            title_words,
            kind=FeatureType.SEQUENCE,
            max_len=lambda feature: 2,
            raw_description="titles",
        ),
    )
    return "title_length", "title_words"


def test_a_field_added_to_the_registry_is_prepared_trained_and_served(
    raw_config: DataConfig, title_fields: tuple[str, str]
) -> None:
    fields = ("user_id", "movie_id", *title_fields)
    feature = FeatureConfig(fields={"ml-100k": fields})  # params accept the new names

    schema = prepare(raw_config, feature)

    assert list(schema.fields) == list(fields)
    assert schema.fields["title_length"].feature_type is FeatureType.SPARSE
    assert schema.fields["title_words"].feature_type is FeatureType.SEQUENCE
    assert schema.fields["title_words"].max_len == 2
    raw = read_raw(raw_config.raw_path)
    vocabs = load_vocabularies(raw_config.processed_path, schema)
    titles = raw.items.column("title").to_pandas()
    assert set(vocabs["title_length"].values) == set(title_length(titles, feature))
    assert set(vocabs["title_words"].values) <= set(title_words(titles, feature).explode())

    # Serving takes the raw `title` column and encodes it exactly as prepare did.
    encoder = RawFeatureEncoder(schema, vocabs, feature)
    assert encoder.required_columns == ("user_id", "movie_id", "title", "title")
    rows = split_rows(raw.ratings.column("timestamp").to_numpy(), raw_config)["test"]
    frame = raw_feature_frame(raw, rows, fields)
    assert list(frame.columns) == ["user_id", "movie_id", "title"]
    batch = encoder.encode(frame)
    prepared = CTRDataset.from_parquet(raw_config.processed_path / "test.parquet", schema)
    for name, column in prepared.columns.items():
        assert torch.equal(batch[name], column.long()), name
    assert (batch["title_words"] != 0).any() and (batch["title_length"] != 0).any()

    # The embedding builds a table per field from the schema alone, pooling the sequence.
    torch.manual_seed(0)
    model = build_model("deepfm", schema, ExperimentConfig())
    assert set(model.embedding.second_order_embeddings) == set(fields)
    assert isinstance(model.embedding.second_order_embeddings["title_words"], torch.nn.EmbeddingBag)
    assert torch.isfinite(model(batch)).all()


def test_a_field_not_in_the_registry_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as raised:
        ExperimentConfig.from_dict({"feature": {"fields": {"ml-100k": ["user_id", "title_words"]}}})

    message = str(raised.value)
    assert message.startswith("feature.fields.ml-100k[1]: 'title_words' is not allowed; choose")
    assert "'genres' or 'release_decade'" in message  # every registered name, in order


def test_encoder_refuses_a_schema_field_without_definition() -> None:
    schema = Schema.of([FieldSpec("mood", FeatureType.SPARSE, 3, 4)])
    vocabs = {"mood": Vocabulary.fit(pd.Series(["happy", "sad"]))}

    with pytest.raises(ServingError, match=r"schema field\(s\) \['mood'\] have no definition"):
        RawFeatureEncoder(schema, vocabs, FeatureConfig())


def test_a_sequence_field_needs_a_length_and_a_sparse_one_has_none() -> None:
    with pytest.raises(ValueError, match="'tags': a sequence field, and only one, has max_len"):
        FieldDef("tags", "item", "tags", kind=FeatureType.SEQUENCE)
    with pytest.raises(ValueError, match="'mood': a sequence field, and only one, has max_len"):
        FieldDef("mood", "user", "mood", max_len=lambda feature: 3)


@pytest.fixture
def decade_workspace(workspace: Path) -> Iterator[Path]:
    """The stage workspace with `feature.fields.ml-100k` = the seed fields + release_decade,
    prepared again by the real `prepare` stage."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["feature"]["fields"]["ml-100k"] = [*SEED_FIELDS, "release_decade"]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage(workspace, "prepare.py")
    yield workspace


def run_stage(workspace: Path, script: str, *args: str, uri: str = "") -> None:
    env = os.environ | ({"MLFLOW_TRACKING_URI": uri} if uri else {})
    done = stage_command(workspace, script.removesuffix(".py"), *args, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_release_decade_on_ml100k_through_training_and_the_pyfunc(
    decade_workspace: Path, tmp_path: Path
) -> None:
    processed = decade_workspace / "data/processed/ml-100k"
    schema = Schema.load(processed / "schema.json")
    assert list(schema.fields) == [*SEED_FIELDS, "release_decade"]
    decades = pq.read_table(processed / "vocab/release_decade.parquet")["value"].to_pylist()
    assert decades[0] is None and all(d.endswith("0s") for d in decades[1:])  # from the titles

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_stage(decade_workspace, "train.py", "--model", "deepfm", "--seed", "42", uri=uri)

    folder = decade_workspace / "models/deepfm/seed-42"
    predictor = CTRPredictor.from_files(folder / "model.pt", processed / "vocab")
    assert predictor.encoder.required_columns[-1] == "year"
    raw = read_raw(decade_workspace / "data/raw/ml-100k")
    frame = raw_feature_frame(raw, np.arange(8), list(schema.fields))
    assert frame["year"].notna().all()
    client = mlflow.MlflowClient(tracking_uri=uri)
    champion = client.get_model_version_by_alias("deepfm-ml-100k", "champion")
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    pyfunc = mlflow.pyfunc.load_model(logged.artifact_location)  # no process-wide URI is set
    assert "year" in pyfunc.metadata.get_input_schema().input_names()
    served = np.asarray(pyfunc.predict(frame))
    np.testing.assert_allclose(served, predictor.predict(frame), rtol=1e-6)

    # The decade is an input of the trained model: another year moves the prediction.
    other_decade = frame.assign(year=np.where(frame["year"] < 1990, 1995, 1975))
    assert not np.allclose(np.asarray(pyfunc.predict(other_decade)), served)
