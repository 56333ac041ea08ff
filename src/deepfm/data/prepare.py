"""The `prepare` step: canonical raw tables -> split, encoded Parquet, vocabularies, schema.

Output folder (`data/processed/<dataset>/`), written whole or not at all:
- `train.parquet`, `val.parquet`, `test.parquet`: one int32 index column per field
  (`genres` a fixed-size list of `max_len` int32, 0-padded), `label` (int8), and
  the raw `rating` and `timestamp` for analysis.
- `vocab/<field>.parquet`: `index, value, count`; index 0 is OOV (value null).
- `schema.json`: the fields, their vocabulary sizes and embedding widths.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm import atomic
from deepfm.config import DataConfig, FeatureConfig
from deepfm.data.features import Vocabulary, age_bucket, encode_lists, zip_prefix
from deepfm.data.raw import RawTables, read_raw
from deepfm.data.schema import FeatureType, FieldSpec, Schema

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPARSE_FIELDS = ("user_id", "movie_id", "gender", "age", "occupation", "zip_prefix")
SEQUENCE_FIELD = "genres"
PARQUET_OPTIONS = {"compression": "zstd"}


@dataclass(frozen=True)
class RatingFeatures:
    """One row per rating: the raw value of every sparse field, genres as offsets + values."""

    sparse: pd.DataFrame  # columns SPARSE_FIELDS
    genre_offsets: np.ndarray  # (rows + 1,) into genre_values
    genre_values: pd.Series
    label: np.ndarray  # int8
    rating: np.ndarray
    timestamp: np.ndarray


def rating_features(raw: RawTables, data: DataConfig, feature: FeatureConfig) -> RatingFeatures:
    """Join each rating with its user's and movie's attributes, column by column."""
    ratings = raw.ratings.to_pandas()
    users = raw.users.to_pandas()
    user_rows = pd.Index(users["user_id"]).get_indexer(ratings["user_id"])
    item_ids = raw.items.column("movie_id").to_numpy()
    item_rows = pd.Index(item_ids).get_indexer(ratings["movie_id"])

    sparse = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(),
            "movie_id": ratings["movie_id"].to_numpy(),
            "gender": users["gender"].to_numpy()[user_rows],
            "age": age_bucket(users["age"].to_numpy())[user_rows],
            "occupation": users["occupation"].to_numpy()[user_rows],
            "zip_prefix": zip_prefix(users["zip_code"], feature.zip_prefix_len).to_numpy()[
                user_rows
            ],
        }
    )
    genres = raw.items.column("genres").combine_chunks()
    item_offsets = genres.offsets.to_numpy()
    item_genres = genres.values.to_numpy(zero_copy_only=False)
    lengths = np.diff(item_offsets)[item_rows]
    starts = item_offsets[:-1][item_rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    rating = ratings["rating"].to_numpy()
    return RatingFeatures(
        sparse=sparse,
        genre_offsets=offsets,
        genre_values=pd.Series(item_genres[flat]),
        label=(rating >= data.label_threshold).astype(np.int8),
        rating=rating,
        timestamp=ratings["timestamp"].to_numpy(),
    )


def split_rows(timestamps: np.ndarray, data: DataConfig) -> dict[str, np.ndarray]:
    """Row positions of each split: a seeded permutation, or by time (oldest to train)."""
    rows = len(timestamps)
    if data.split == "random":
        order = np.random.default_rng(data.seed).permutation(rows)
    else:
        order = np.argsort(timestamps, kind="stable")
    train_end = round(rows * data.split_ratios[0])
    val_end = train_end + round(rows * data.split_ratios[1])
    parts = np.split(order, [train_end, val_end])
    # Each split keeps the release's row order; training reshuffles every epoch.
    return {name: np.sort(part) for name, part in zip(SPLITS, parts, strict=True)}


def genre_rows(features: RatingFeatures, rows: np.ndarray) -> tuple[np.ndarray, pd.Series]:
    """The genre list column restricted to `rows`, as (offsets, flat values)."""
    offsets = features.genre_offsets
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.repeat(offsets[rows] - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, features.genre_values.iloc[flat].reset_index(drop=True)


def fit_vocabularies(
    features: RatingFeatures, train_rows: np.ndarray, feature: FeatureConfig
) -> dict[str, Vocabulary]:
    """One vocabulary per field, fitted on the training split only."""
    train = features.sparse.iloc[train_rows]
    vocabs = {name: Vocabulary.fit(train[name], feature.min_count) for name in SPARSE_FIELDS}
    _, train_genres = genre_rows(features, train_rows)
    vocabs[SEQUENCE_FIELD] = Vocabulary.fit(train_genres, feature.min_count)
    return vocabs


def build_schema(vocabs: dict[str, Vocabulary], feature: FeatureConfig) -> Schema:
    specs = [
        FieldSpec(
            name,
            FeatureType.SPARSE,
            vocabs[name].size,
            feature.embedding_dim_for(vocabs[name].size),
        )
        for name in SPARSE_FIELDS
    ]
    genres = vocabs[SEQUENCE_FIELD]
    specs.append(
        FieldSpec(
            SEQUENCE_FIELD,
            FeatureType.SEQUENCE,
            genres.size,
            feature.embedding_dim_for(genres.size),
            max_len=feature.genres_max_len,
        )
    )
    return Schema.of(specs)


def encode_split(
    features: RatingFeatures,
    rows: np.ndarray,
    vocabs: dict[str, Vocabulary],
    feature: FeatureConfig,
) -> pa.Table:
    columns: dict[str, pa.Array] = {
        name: pa.array(vocabs[name].encode(features.sparse[name].to_numpy()[rows]))
        for name in SPARSE_FIELDS
    }
    offsets, values = genre_rows(features, rows)
    genres = encode_lists(offsets, values, vocabs[SEQUENCE_FIELD], feature.genres_max_len)
    columns[SEQUENCE_FIELD] = pa.FixedSizeListArray.from_arrays(
        pa.array(genres.reshape(-1)), feature.genres_max_len
    )
    columns["label"] = pa.array(features.label[rows])
    columns["rating"] = pa.array(features.rating[rows])
    columns["timestamp"] = pa.array(features.timestamp[rows])
    return pa.table(columns)


def prepare(data: DataConfig, feature: FeatureConfig) -> Schema:
    """Read `data.raw_path`, write `data.processed_path` atomically; return the schema."""
    raw = read_raw(data.raw_path)
    features = rating_features(raw, data, feature)
    rows_by_split = split_rows(features.timestamp, data)
    vocabs = fit_vocabularies(features, rows_by_split["train"], feature)
    schema = build_schema(vocabs, feature)

    with atomic.replace_dir(data.processed_path) as out:
        for split, rows in rows_by_split.items():
            table = encode_split(features, rows, vocabs, feature)
            pq.write_table(table, out / f"{split}.parquet", **PARQUET_OPTIONS)
            positives = float(features.label[rows].mean()) if len(rows) else 0.0
            logger.info("%s: %d rows, %.1f%% positive", split, len(rows), 100 * positives)
        (out / "vocab").mkdir()
        for name, vocab in vocabs.items():
            pq.write_table(vocab.to_arrow(), out / "vocab" / f"{name}.parquet", **PARQUET_OPTIONS)
        (out / "schema.json").write_text(schema.to_json(), encoding="utf-8")
    logger.info(
        "schema: %d fields, total_embedding_dim %d -> %s",
        schema.num_fields,
        schema.total_embedding_dim,
        data.processed_path,
    )
    return schema


def load_vocabularies(processed: Path, schema: Schema) -> dict[str, Vocabulary]:
    """The fitted vocabularies of a prepared dataset, in schema order."""
    return {
        name: Vocabulary.from_arrow(pq.read_table(processed / "vocab" / f"{name}.parquet"))
        for name in schema.fields
    }


def raw_feature_frame(raw: RawTables, rows: np.ndarray) -> pd.DataFrame:
    """Ratings `rows` as the raw features a served model takes (no label, no encoding).

    Columns: user_id, movie_id, gender, age (years), occupation, zip_code, genres (list).
    """
    ratings = raw.ratings.select(["user_id", "movie_id"]).take(pa.array(rows)).to_pandas()
    users = raw.users.to_pandas()
    items = raw.items.select(["movie_id", "genres"]).to_pandas()
    frame = ratings.merge(users, on="user_id", how="left").merge(items, on="movie_id", how="left")
    frame["genres"] = frame["genres"].map(list)
    return frame[["user_id", "movie_id", "gender", "age", "occupation", "zip_code", "genres"]]
