"""Vocabularies, OOV, buckets and list encoding."""

import numpy as np
import pandas as pd
import pyarrow as pa

from deepfm.config import FeatureConfig
from deepfm.data.features import (
    AGE_LABELS,
    Vocabulary,
    age_bucket,
    encode_lists,
    list_parts,
    release_decade,
    title_year,
    zip_prefix,
)
from deepfm.data.fields import FIELD_DEFS


def test_vocabulary_orders_by_count_then_value_and_reserves_zero():
    vocab = Vocabulary.fit(pd.Series(["b", "a", "c", "a", "b", "a", None]))
    assert list(vocab.values) == ["a", "b", "c"]
    assert vocab.size == 4
    assert vocab.encode(pd.Series(["a", "c", "zzz", None])).tolist() == [1, 3, 0, 0]
    assert vocab.encode(np.array(["b"])).dtype == np.int32


def test_min_count_sends_rare_values_to_oov():
    vocab = Vocabulary.fit(pd.Series([1, 1, 2, 3, 3, 3]), min_count=2)
    assert list(vocab.values) == [3, 1]
    assert vocab.encode(np.array([2, 3, 1])).tolist() == [0, 1, 2]


def test_vocabulary_arrow_round_trip_has_oov_row():
    vocab = Vocabulary.fit(pd.Series(["x", "y", "y"]))
    table = vocab.to_arrow()
    assert table.column("index").to_pylist() == [0, 1, 2]
    assert table.column("value").to_pylist() == [None, "y", "x"]
    assert table.column("count").to_pylist() == [0, 2, 1]
    again = Vocabulary.from_arrow(table)
    assert again.encode(pd.Series(["x", "y", "q"])).tolist() == [2, 1, 0]


def test_age_buckets_follow_movielens_1m_groups():
    ages = np.array([1, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73])
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert age_bucket(ages).tolist() == [AGE_LABELS[i] for i in expected]


def test_zip_prefix_keeps_first_characters():
    codes = pd.Series(["85711", "t8h1n", " 02139"])
    assert zip_prefix(codes, 3).tolist() == ["857", "T8H", "021"]


def test_encode_lists_pads_truncates_and_maps_unseen_to_zero():
    lists = pa.array([["a", "b"], [], ["c", "a", "b", "a"], ["zzz"]])
    vocab = Vocabulary.fit(pd.Series(["a", "a", "b", "c"]))
    matrix = encode_lists(
        lists.offsets.to_numpy(), pd.Series(lists.values.to_pylist()), vocab, max_len=3
    )
    a, b, c = vocab.encode(pd.Series(["a", "b", "c"])).tolist()
    assert matrix.tolist() == [[a, b, 0], [0, 0, 0], [c, a, b], [0, 0, 0]]
    assert matrix.dtype == np.int32


def test_from_counts_equals_fit_on_the_expanded_column():
    values = pd.Series(["b", "a", None, "c", "a"])
    counts = np.array([3, 1, 7, 0, 2])
    expanded = pd.Series(np.repeat(values.to_numpy(), counts))

    direct = Vocabulary.from_counts(values, counts, min_count=2)
    fitted = Vocabulary.fit(expanded, min_count=2)

    assert list(direct.values) == list(fitted.values) == ["a", "b"]
    assert direct.counts.tolist() == fitted.counts.tolist() == [3, 3]


def test_title_year_and_release_decade():
    titles = pd.Series(
        [
            "Toy Story (1995)",
            "American President, The (1995)",
            "Babylon 5",
            "Big Bang Theory (2007-)",
            "Fawlty Towers (1975-1979)",
            "Ocean's Eleven (2001) ",
            "(500) Days of Summer (2009)",
        ]
    )
    years = title_year(titles)

    assert years.tolist() == [1995, 1995, pd.NA, 2007, 1975, 2001, 2009]
    assert release_decade(years).tolist() == [
        "1990s",
        "1990s",
        pd.NA,
        "2000s",
        "1970s",
        "2000s",
        "2000s",
    ]
    assert release_decade(pd.Series([1989.0, np.nan, "x"])).tolist() == ["1980s", pd.NA, pd.NA]


def test_field_values_from_raw_columns():
    raw = pd.DataFrame(
        {
            "age": [30, None, 17],
            "zip_code": [" t8h1n", None, "02139"],
            "year": [1995, None, 2019],
            "gender": ["F", "M", None],
        }
    )

    feature = FeatureConfig(zip_prefix_len=3)

    def values(name: str) -> list:
        return FIELD_DEFS[name].compute(raw, feature).tolist()

    assert values("age") == ["25-34", np.nan, "under 18"]
    assert values("zip_prefix") == ["T8H", pd.NA, "021"]
    assert values("release_decade") == ["1990s", pd.NA, "2010s"]
    assert FIELD_DEFS["gender"].compute(raw, feature).equals(raw["gender"])  # names pass through
    assert FIELD_DEFS["zip_prefix"].compute(raw, FeatureConfig(zip_prefix_len=2)).tolist() == [
        "T8",
        pd.NA,
        "02",
    ]


def test_list_parts_of_a_slice_and_of_null_lists():
    lists = pa.array([["a"], None, ["b", "c"], [], ["d"]], type=pa.list_(pa.string()))[1:4]

    offsets, flat_values = list_parts(lists)

    assert offsets.tolist() == [0, 0, 2, 2]
    assert flat_values.tolist() == ["b", "c"]
