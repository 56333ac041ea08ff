"""Feature transforms: raw columns -> field values, and vocabularies (value -> index).

The fields themselves (which transform makes which field from which raw column) are
declared in `deepfm.data.fields`. All functions work on whole columns (numpy / pandas /
Arrow), never a Python loop per row.
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
MAX_AGE = 120  # years; an age outside 0..MAX_AGE is an error in the data, scored as OOV

# "Toy Story (1995)"; a range such as "(2007-2013)" or "(2007-)" gives its first year.
YEAR_IN_TITLE = r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$"


def age_bucket(age_years: np.ndarray) -> np.ndarray:
    """Map ages in years to MovieLens-1M's seven group labels; an impossible age
    (negative, over `MAX_AGE`, infinite or NaN) maps to NaN, which encodes as OOV."""
    ages = np.asarray(age_years, dtype=np.float64)
    labels = np.array(AGE_LABELS, dtype=object)[np.searchsorted(AGE_BOUNDS, ages, side="right")]
    labels[~((ages >= 0) & (ages <= MAX_AGE))] = np.nan  # NaN fails both comparisons
    return labels


def zip_prefix(zip_codes: pd.Series, length: int) -> pd.Series:
    """The first `length` characters of each zip code, upper-cased (US and Canadian codes)."""
    return zip_codes.str.strip().str.upper().str[:length]


def title_year(titles: pd.Series) -> pd.Series:
    """The year in parentheses that ends a MovieLens title (Int64; missing when none)."""
    years = titles.astype("string").str.extract(YEAR_IN_TITLE, expand=False)
    return pd.to_numeric(years).astype("Int64")


def release_decade(years: pd.Series) -> pd.Series:
    """'1990s' for 1990..1999; a missing or non-numeric year stays missing."""
    decades = (pd.to_numeric(years, errors="coerce") // 10 * 10).astype("Int64")
    return decades.astype("string") + "s"


@dataclass(frozen=True)
class Vocabulary:
    """Values seen in training, most frequent first; value i gets index i + 1 (0 is OOV).

    Args:
        values: the kept values, most frequent first.
        counts: each value's count in the training rows.

    Example::

        vocabulary = Vocabulary.fit(pd.Series(["M", "F", "M"]))
        vocabulary.encode(pd.Series(["F", "X"]))  # [2, 0]: X is OOV
    """

    values: pd.Index
    counts: np.ndarray

    @classmethod
    def fit(cls, column: pd.Series | np.ndarray, min_count: int = 1) -> Vocabulary:
        """Count values (nulls ignored), keep those seen at least `min_count` times."""
        column = pd.Series(column)
        return cls.from_counts(column, np.ones(len(column), dtype=np.int64), min_count)

    @classmethod
    def from_counts(cls, values: pd.Series, counts: np.ndarray, min_count: int = 1) -> Vocabulary:
        """As `fit` on a column where `values[i]` occurs `counts[i]` times."""
        codes, uniques = pd.factorize(values)
        known = codes >= 0  # nulls are -1
        totals = np.bincount(codes[known], weights=counts[known], minlength=len(uniques))
        keep = totals >= max(min_count, 1)
        # Frequency first, ties by value, so the order is the same run after run.
        table = pd.DataFrame({"value": uniques[keep], "count": totals[keep].astype(np.int64)})
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


def text_lists(values: pd.Series) -> pa.ListArray:
    """A column of lists of text (None for none) as an Arrow list array; anything else is
    an Arrow error."""
    return pa.array(values, type=pa.list_(pa.string()))


def list_parts(lists: pa.ListArray) -> tuple[np.ndarray, pd.Series]:
    """Offsets (from 0) and flat values of a list array, as `encode_lists` takes them;
    a null list is empty."""
    offsets = lists.offsets.to_numpy()
    flat = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    return offsets - offsets[0], pd.Series(flat.to_numpy(zero_copy_only=False))
