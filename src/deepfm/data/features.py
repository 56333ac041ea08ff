"""Feature transforms: age buckets, zip prefixes and vocabularies (value -> index).

All functions work on whole columns (numpy / pandas), never a Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

OOV_INDEX = 0

# MovieLens-1M's seven age groups: lower bounds (years) and labels.
AGE_BOUNDS = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def age_bucket(age_years: np.ndarray) -> np.ndarray:
    """Map ages in years to MovieLens-1M's seven group labels."""
    labels = np.array(AGE_LABELS, dtype=object)
    return labels[np.searchsorted(AGE_BOUNDS, np.asarray(age_years), side="right")]


def zip_prefix(zip_codes: pd.Series, length: int) -> pd.Series:
    """The first `length` characters of each zip code, upper-cased (US and Canadian codes)."""
    return zip_codes.str.strip().str.upper().str[:length]


@dataclass(frozen=True)
class Vocabulary:
    """Values seen in training, most frequent first; value i gets index i + 1 (0 is OOV)."""

    values: pd.Index
    counts: np.ndarray

    @classmethod
    def fit(cls, column: pd.Series | np.ndarray, min_count: int = 1) -> Vocabulary:
        """Count values (nulls ignored), keep those seen at least `min_count` times."""
        counts = pd.Series(column).dropna().value_counts()
        counts = counts[counts >= min_count]
        # Frequency first, ties by value, so the order is the same run after run.
        table = pd.DataFrame({"value": counts.index, "count": counts.to_numpy()})
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        return cls(pd.Index(table["value"]), table["count"].to_numpy(np.int64))

    @property
    def size(self) -> int:
        """Number of indices, OOV included."""
        return len(self.values) + 1

    def encode(self, column: pd.Series | np.ndarray) -> np.ndarray:
        """int32 indices; values not in the vocabulary (and nulls) map to 0."""
        positions = self.values.get_indexer(pd.Series(column))
        return (positions + 1).astype(np.int32)  # get_indexer gives -1 for unseen -> 0

    def to_arrow(self) -> pa.Table:
        """(index, value, count) rows, OOV first with value null and count 0."""
        values = pa.array([None, *self.values.tolist()])
        return pa.table(
            {
                "index": pa.array(np.arange(self.size, dtype=np.int32)),
                "value": values,
                "count": pa.array(np.concatenate([[0], self.counts]).astype(np.int64)),
            }
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Vocabulary:
        values = table.column("value").to_pylist()[1:]
        counts = table.column("count").to_numpy()[1:]
        return cls(pd.Index(values), counts.astype(np.int64))


def encode_lists(
    offsets: np.ndarray, flat_values: pd.Series, vocab: Vocabulary, max_len: int
) -> np.ndarray:
    """Encode a list column given as Arrow-style offsets and flat values.

    Returns an int32 (rows, max_len) matrix: each row's first `max_len` indices,
    then 0 padding. Unseen values become 0, which pooling ignores like padding.
    """
    flat_indices = vocab.encode(flat_values)
    lengths = np.diff(offsets)
    rows = len(lengths)
    row_of_item = np.repeat(np.arange(rows), lengths)
    position = np.arange(len(flat_indices)) - np.repeat(offsets[:-1], lengths)
    keep = position < max_len
    matrix = np.zeros((rows, max_len), dtype=np.int32)
    matrix[row_of_item[keep], position[keep]] = flat_indices[keep]
    return matrix
