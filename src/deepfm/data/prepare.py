"""The `prepare` step: canonical raw tables -> split, encoded Parquet, vocabularies, schema.

The model fields are `feature.fields[data.dataset]`, each defined in
`deepfm.data.fields.FIELD_DEFS`. Each is a property of the rating's user or of its
movie (its `source`), so its values are computed once per user or movie, and every
rating points at its user's and its movie's row: vocabulary counts are weighted
counts over those rows and encoded columns are gathers, never a loop per rating.

Output folder (`data/processed/<dataset>/`), written whole or not at all:
- `train.parquet`, `val.parquet`, `test.parquet`: one int32 index column per field
  (a sequence field such as `genres` a fixed-size list of `max_len` int32, 0-padded),
  `label` (int8), and the raw `rating` and `timestamp` for analysis.
- `vocab/<field>.parquet`: `index, value, count`; index 0 is OOV (value null).
- `schema.json`: the fields, their vocabulary sizes and embedding widths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm import atomic
from deepfm.config import ConfigError, DataConfig, FeatureConfig
from deepfm.data.features import Vocabulary, encode_lists, list_parts, title_year
from deepfm.data.fields import FIELD_DEFS, FieldDef
from deepfm.data.raw import RawTables, read_raw
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class PrepareWriteError(UserError, OSError):
    """The prepared data could not be written (disk full, no permission); names the folder.

    Example::

        raise PrepareWriteError(f"{out_dir}: cannot write the prepared data ({err})")
    """


PARQUET_OPTIONS = {"compression": "zstd"}


@dataclass(frozen=True)
class RatingFeatures:
    """Field values once per user or movie, and each rating's user and movie row.

    Args:
        fields: the model fields, in schema order.
        values: field name -> one value (or list) per user or per movie, by the field's source.
        user_rows: `(ratings,)`, the row of each rating's user in `raw.users`.
        item_rows: `(ratings,)`, the row of each rating's movie in `raw.items`.
        label: `(ratings,)` int8, 1 where the rating reaches `data.label_threshold`.
        rating: `(ratings,)`, the raw ratings.
        timestamp: `(ratings,)`, the ratings' Unix seconds.

    Example::

        features = rating_features(raw, config.data, config.feature)
        genres_rows = features.rows_of(FIELD_DEFS["genres"])  # a movie row per rating
    """

    fields: tuple[FieldDef, ...]
    values: dict[str, pd.Series | pa.ListArray]
    user_rows: np.ndarray
    item_rows: np.ndarray
    label: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def rows_of(self, field: FieldDef) -> np.ndarray:
        """Each rating's row in the table `field` comes from."""
        return self.user_rows if field.source == "user" else self.item_rows


def rating_features(raw: RawTables, data: DataConfig, feature: FeatureConfig) -> RatingFeatures:
    """The fields of `data.dataset`, per user and movie, and where each rating points."""
    fields = tuple(FIELD_DEFS[name] for name in feature.fields_for(data.dataset))
    tables = source_tables(raw)
    values = {}
    for field in fields:
        values[field.name] = field.compute(tables[field.source], feature)
        if field.kind is FeatureType.SPARSE and values[field.name].isna().all():
            raise ConfigError(
                f"feature.fields.{data.dataset}: {field.name!r} has no values in {data.dataset} "
                f"(the ml-20m, ml-25m and ml-latest-small releases have no user demographics)"
            )
    ratings = raw.ratings
    rating = ratings.column("rating").to_numpy()
    return RatingFeatures(
        fields=fields,
        values=values,
        # users and items are sorted by id and hold every id that ratings uses
        user_rows=np.searchsorted(tables["user"]["user_id"], ratings.column("user_id").to_numpy()),
        item_rows=np.searchsorted(
            tables["item"]["movie_id"], ratings.column("movie_id").to_numpy()
        ),
        label=(rating >= data.label_threshold).astype(np.int8),
        rating=rating,
        timestamp=ratings.column("timestamp").to_numpy(),
    )


def source_tables(raw: RawTables) -> dict[str, pd.DataFrame]:
    """The raw columns fields are computed from, by `FieldDef.source`: the users table,
    and the movies table (lists as Python lists) with `year` from the title."""
    items = pd.DataFrame(
        {
            name: pd.Series(column.to_pylist())
            if pa.types.is_list(column.type)
            else column.to_pandas()
            for name, column in zip(raw.items.column_names, raw.items.columns, strict=True)
        }
    )
    items["year"] = title_year(items["title"])
    return {"user": raw.users.to_pandas(), "item": items}


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


def check_splits(rows_by_split: dict[str, np.ndarray], label: np.ndarray, data: DataConfig) -> None:
    """A `ConfigError` if a split is empty or holds one label only: nothing could learn from it
    or measure it (AUC needs both labels)."""
    for split, rows in rows_by_split.items():
        if not len(rows):
            raise ConfigError(
                f"data.split_ratios {list(data.split_ratios)} leave the {split} split of "
                f"{data.dataset} empty ({len(label)} ratings); give every split a larger share"
            )
        positive = float(label[rows].mean())
        if positive in (0.0, 1.0):
            raise ConfigError(
                f"data.label_threshold {data.label_threshold} makes {100 * positive:.0f}% of the "
                f"{len(rows)} {split} ratings of {data.dataset} positive; choose a threshold "
                f"that leaves both labels"
            )


def fit_vocabularies(
    features: RatingFeatures, train_rows: np.ndarray, feature: FeatureConfig
) -> dict[str, Vocabulary]:
    """One vocabulary per field (schema order), fitted on the training split only.

    A value's count is the number of training ratings whose user or movie has it.
    """
    vocabs = {}
    for field in features.fields:
        values = features.values[field.name]
        train_counts = np.bincount(features.rows_of(field)[train_rows], minlength=len(values))
        if field.kind is FeatureType.SEQUENCE:
            offsets, flat_values = list_parts(values)
            values, train_counts = flat_values, np.repeat(train_counts, np.diff(offsets))
        vocabs[field.name] = Vocabulary.from_counts(values, train_counts, feature.min_count)
    return vocabs


def build_schema(
    fields: tuple[FieldDef, ...], vocabs: dict[str, Vocabulary], feature: FeatureConfig
) -> Schema:
    """A spec per field, in their order: its kind, vocabulary size, width and length."""
    specs = []
    for field in fields:
        size = vocabs[field.name].size
        width = feature.embedding_dim_for(size)
        specs.append(FieldSpec(field.name, field.kind, size, width, field.length(feature)))
    return Schema.of(specs)


def encode_split(
    features: RatingFeatures,
    rows: np.ndarray,
    vocabs: dict[str, Vocabulary],
    feature: FeatureConfig,
) -> pa.Table:
    """The split's rows: one index column per field, then label, rating and timestamp."""
    columns: dict[str, pa.Array] = {}
    for field in features.fields:
        # one index (or row of max_len indices) per user or movie, gathered per rating
        indices = encode_values(field, features.values[field.name], vocabs[field.name], feature)
        gathered = indices[features.rows_of(field)[rows]]
        if field.kind is FeatureType.SEQUENCE:
            columns[field.name] = pa.FixedSizeListArray.from_arrays(
                pa.array(gathered.reshape(-1)), field.length(feature)
            )
        else:
            columns[field.name] = pa.array(gathered)
    columns["label"] = pa.array(features.label[rows])
    columns["rating"] = pa.array(features.rating[rows])
    columns["timestamp"] = pa.array(features.timestamp[rows])
    return pa.table(columns)


def encode_values(
    field: FieldDef, values: pd.Series | pa.ListArray, vocab: Vocabulary, feature: FeatureConfig
) -> np.ndarray:
    """int32 indices of `field.compute`'s values: `(rows,)`, or `(rows, max_len)` for lists."""
    if field.kind is FeatureType.SEQUENCE:
        offsets, flat_values = list_parts(values)
        return encode_lists(offsets, flat_values, vocab, field.length(feature))
    return vocab.encode(values)


def prepare(data: DataConfig, feature: FeatureConfig) -> Schema:
    """Read `data.raw_path`, write `data.processed_path` atomically; return the schema."""
    raw = read_raw(data.raw_path)
    features = rating_features(raw, data, feature)
    rows_by_split = split_rows(features.timestamp, data)
    check_splits(rows_by_split, features.label, data)
    vocabs = fit_vocabularies(features, rows_by_split["train"], feature)
    schema = build_schema(features.fields, vocabs, feature)

    try:
        with atomic.replace_dir(data.processed_path) as out:
            for split, rows in rows_by_split.items():
                table = encode_split(features, rows, vocabs, feature)
                pq.write_table(table, out / f"{split}.parquet", **PARQUET_OPTIONS)
                positives = float(features.label[rows].mean())
                logger.info("%s: %d rows, %.1f%% positive", split, len(rows), 100 * positives)
            (out / "vocab").mkdir()
            for name, vocab in vocabs.items():
                path = out / "vocab" / f"{name}.parquet"
                pq.write_table(vocab.to_arrow(), path, **PARQUET_OPTIONS)
            (out / "schema.json").write_text(schema.to_json(), encoding="utf-8")
    except OSError as err:  # a full disk, a read-only folder: the old output stays as it was
        reason = err.strerror or str(err).splitlines()[0]
        raise PrepareWriteError(
            f"{data.processed_path}: cannot write the prepared data ({reason}); "
            "the previous output, if any, is unchanged"
        ) from err
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


def raw_feature_frame(raw: RawTables, rows: np.ndarray, fields: Sequence[str]) -> pd.DataFrame:
    """Ratings `rows` as the raw columns a model on `fields` takes (no label, no encoding).

    One column per field (its `FieldDef.raw_column`), in field order; lists as Python lists.
    """
    tables = source_tables(raw)
    ratings = raw.ratings.select(["user_id", "movie_id"]).take(pa.array(rows)).to_pandas()
    source_rows = {
        "user": np.searchsorted(tables["user"]["user_id"], ratings["user_id"]),
        "item": np.searchsorted(tables["item"]["movie_id"], ratings["movie_id"]),
    }
    frame = {}
    for field in (FIELD_DEFS[name] for name in fields):
        column = tables[field.source][field.raw_column]
        frame[field.raw_column] = column.iloc[source_rows[field.source]].reset_index(drop=True)
    return pd.DataFrame(frame)
