"""Properties of vocabulary fit/encode, bucketing and splitting, over generated inputs
(hypothesis; derandomized, so every run tries the same examples)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from deepfm.config import DataConfig
from deepfm.data.features import (
    AGE_BOUNDS,
    AGE_LABELS,
    Vocabulary,
    age_bucket,
    encode_lists,
    zip_prefix,
)
from deepfm.data.prepare import SPLITS, split_rows

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)

tokens = st.text(alphabet="abcxyz", min_size=1, max_size=3)
columns = st.lists(st.one_of(tokens, st.none()), max_size=60)


@PROPERTY
@given(columns, st.integers(1, 3), st.randoms(use_true_random=False))
def test_vocabulary_fit_then_encode(column, min_count, random):
    vocab = Vocabulary.fit(pd.Series(column, dtype=object), min_count)
    counts = pd.Series(column, dtype=object).dropna().value_counts()
    kept = set(counts[counts >= min_count].index)

    indices = vocab.encode(pd.Series(column, dtype=object))

    assert vocab.size == len(kept) + 1
    for value, index in zip(column, indices, strict=True):
        assert (index == 0) == (value not in kept)  # nulls and rare values are OOV
    by_value = {value: int(index) for value, index in zip(column, indices, strict=True)}
    kept_indices = sorted(by_value[value] for value in kept)
    assert kept_indices == list(range(1, vocab.size))  # one index each, 1..size-1
    # Most frequent first, ties by value: the order does not depend on the rows' order.
    order = [(-counts[value], value) for value in vocab.values]
    assert order == sorted(order)
    shuffled = list(column)
    random.shuffle(shuffled)
    again = Vocabulary.fit(pd.Series(shuffled, dtype=object), min_count)
    assert list(again.values) == list(vocab.values)
    # Unseen values are OOV; the Parquet form encodes alike.
    assert vocab.encode(pd.Series(["unseen"])).tolist() == [0]
    restored = Vocabulary.from_arrow(vocab.to_arrow())
    assert restored.encode(pd.Series(column, dtype=object)).tolist() == indices.tolist()


@PROPERTY
@given(st.lists(st.lists(tokens, max_size=8), max_size=20), st.integers(1, 6))
def test_encode_lists_keeps_the_first_max_len_then_pads(lists, max_len):
    vocab = Vocabulary.fit(pd.Series([value for row in lists for value in row[:4]], dtype=object))
    arrow = pa.array(lists, type=pa.list_(pa.string()))
    flat = pd.Series(arrow.flatten().to_pylist(), dtype=object)

    matrix = encode_lists(arrow.offsets.to_numpy(), flat, vocab, max_len)

    assert matrix.shape == (len(lists), max_len)
    for row, encoded in zip(lists, matrix, strict=True):
        kept = row[:max_len]
        expected = vocab.encode(pd.Series(kept, dtype=object)).tolist() if kept else []
        assert encoded.tolist() == expected + [0] * (max_len - len(kept))


@PROPERTY
@given(st.lists(st.integers(0, 120), min_size=1, max_size=50))
def test_age_buckets_are_the_groups_and_keep_the_order(ages):
    labels = age_bucket(np.array(ages))

    groups = [AGE_LABELS.index(label) for label in labels]
    assert groups == [sum(age >= bound for bound in AGE_BOUNDS) for age in ages]
    in_age_order = [group for _, group in sorted(zip(ages, groups, strict=True))]
    assert in_age_order == sorted(in_age_order)


@PROPERTY
@given(
    st.lists(st.text(alphabet="0123456789ABTabt -\t", max_size=8), max_size=20), st.integers(1, 5)
)
def test_zip_prefix_is_the_first_characters_upper_cased(codes, length):
    prefixes = zip_prefix(pd.Series(codes, dtype="string"), length)

    assert prefixes.tolist() == [code.strip().upper()[:length] for code in codes]


ratios = st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20)).map(
    lambda parts: tuple(part / sum(parts) for part in parts)
)


@PROPERTY
@given(
    st.lists(st.integers(0, 50), max_size=300),
    ratios,
    st.sampled_from(["random", "temporal"]),
    st.integers(0, 2**32 - 1),
)
def test_splits_partition_the_rows_in_the_asked_shares(timestamps, shares, split, seed):
    data = DataConfig(split=split, split_ratios=shares, seed=seed)
    rows = len(timestamps)

    parts = split_rows(np.array(timestamps, dtype=np.int64), data)

    assert list(parts) == list(SPLITS)
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(rows))  # every row once: disjoint, complete
    for part, share in zip(parts.values(), shares, strict=True):
        assert part.tolist() == sorted(part.tolist())  # release order kept
        assert abs(len(part) - rows * share) <= 1
    again = split_rows(np.array(timestamps, dtype=np.int64), data)
    assert all(np.array_equal(parts[name], again[name]) for name in SPLITS)
    if split == "temporal":  # nothing in train is newer than val, nor val than test
        times = np.array(timestamps)
        train, val, test = (times[parts[name]] for name in SPLITS)
        for older, newer in ((train, val), (val, test), (train, test)):
            assert not len(older) or not len(newer) or older.max() <= newer.min()
