"""Vocabularies, OOV, buckets and list encoding."""

import numpy as np
import pandas as pd
import pyarrow as pa

from deepfm.data.features import AGE_LABELS, Vocabulary, age_bucket, encode_lists, zip_prefix


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
