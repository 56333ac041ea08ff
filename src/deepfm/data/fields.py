"""The model fields, each declared once in `FIELD_DEFS`: what it is and where it comes from.

A `FieldDef` says whose property a field is (the rating's user or its movie), the raw
column it is computed from (what a served model takes), the function that turns that
column into the field's values, and whether it is one value per rating (sparse) or a
list (sequence, mean-pooled by `FeatureEmbedding`). `prepare` reads it on the users and
movies tables, serving (`RawFeatureEncoder`) on raw request rows, and `feature.fields`
in params accepts exactly its names: a new field is one entry in `FIELD_DEFS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from deepfm.data.features import age_bucket, release_decade, text_lists, zip_prefix
from deepfm.data.schema import FeatureType

if TYPE_CHECKING:
    from deepfm.config import FeatureConfig

Source = Literal["user", "item"]
# What a served model's raw column of a sparse field must hold: numbers, values of the
# vocabulary's kind (numbers or text), or anything (no check). A sequence field's raw
# column always holds lists of text.
RawKind = Literal["numbers", "vocabulary", "any"]
ValueFunction = Callable[[pd.Series, "FeatureConfig"], pd.Series]


def same_values(column: pd.Series, feature: FeatureConfig) -> pd.Series:
    """The raw values themselves (ids, names, lists of genres)."""
    return column


def age_groups(ages: pd.Series, feature: FeatureConfig) -> pd.Series:
    """Ages in years -> MovieLens-1M's seven groups; a non-numeric or impossible age -> NaN."""
    years = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.Series(age_bucket(years), index=ages.index)


def zip_prefixes(zip_codes: pd.Series, feature: FeatureConfig) -> pd.Series:
    """The first `feature.zip_prefix_len` characters of each zip code, upper-cased."""
    return zip_prefix(zip_codes.astype("string"), feature.zip_prefix_len)


def decades(years: pd.Series, feature: FeatureConfig) -> pd.Series:
    """'1990s' for 1990..1999; a missing or non-numeric year stays missing."""
    return release_decade(years)


@dataclass(frozen=True)
class FieldDef:
    """One model field: whose property it is, its raw column and how its values are made.

    Args:
        name: the field's name in `feature.fields`, the schema, the vocabulary file and
            the model's batch.
        source: "user" or "item": the rating's user or its movie, whose table holds
            `raw_column` (the users table; the movies with `year` from the title).
        raw_column: the column the values are computed from; a served model takes it.
        values: `(raw column, feature config) -> values`, on whole columns; a sequence
            field's values are lists of text.
        kind: `FeatureType.SPARSE` (one index per rating) or `SEQUENCE` (up to `max_len`
            indices, 0-padded, mean-pooled).
        raw_kind: for a sparse field, what a served raw column must hold (see `RawKind`).
        max_len: for a sequence field, its length from the feature config.
        raw_description: for a sequence field, what its lists hold, for error messages.

    Example::

        FIELD_DEFS["title_length"] = FieldDef(
            "title_length", "item", "title", values=lambda titles, feature: titles.str.len()
        )
    """

    name: str
    source: Source
    raw_column: str
    values: ValueFunction = same_values
    kind: FeatureType = FeatureType.SPARSE
    raw_kind: RawKind = "vocabulary"
    max_len: Callable[[FeatureConfig], int] | None = None
    raw_description: str = ""

    def __post_init__(self) -> None:
        if (self.kind is FeatureType.SEQUENCE) != (self.max_len is not None):
            raise ValueError(f"field {self.name!r}: a sequence field, and only one, has max_len")

    def length(self, feature: FeatureConfig) -> int:
        """Indices per rating: `max_len` for a sequence field, 1 for a sparse one."""
        return self.max_len(feature) if self.max_len is not None else 1

    def compute(self, raw: pd.DataFrame, feature: FeatureConfig) -> pd.Series | pa.ListArray:
        """The field's values from `raw[raw_column]`: a Series, or lists as an Arrow array."""
        values = self.values(raw[self.raw_column], feature)
        return text_lists(values) if self.kind is FeatureType.SEQUENCE else values


FIELD_DEFS: dict[str, FieldDef] = {
    field.name: field
    for field in (
        FieldDef("user_id", "user", "user_id"),
        FieldDef("movie_id", "item", "movie_id"),
        FieldDef("gender", "user", "gender"),
        FieldDef("age", "user", "age", age_groups, raw_kind="numbers"),
        FieldDef("occupation", "user", "occupation"),
        FieldDef("zip_prefix", "user", "zip_code", zip_prefixes, raw_kind="any"),
        FieldDef(
            "genres",
            "item",
            "genres",
            kind=FeatureType.SEQUENCE,
            max_len=lambda feature: feature.genres_max_len,
            raw_description="genre names such as ['Action', 'Drama']",
        ),
        FieldDef("release_decade", "item", "year", decades, raw_kind="numbers"),
    )
}
