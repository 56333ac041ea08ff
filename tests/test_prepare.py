"""prepare: splits, labels, vocabularies fitted on train only, schema, atomic output."""

import re
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import small_data_config
from deepfm.config import SEED_FIELDS, ConfigError, DataConfig, FeatureConfig
from deepfm.data.features import age_bucket
from deepfm.data.prepare import (
    SPLITS,
    check_splits,
    encode_split,
    fit_vocabularies,
    prepare,
    rating_features,
    raw_feature_frame,
    split_rows,
)
from deepfm.data.raw import RawDataError, read_raw, write_raw
from deepfm.data.releases.ml100k import parse_ml100k
from deepfm.data.schema import FeatureType, Schema
from movielens_fixtures import write_ml100k_folder


def read_splits(data):
    return {s: pq.read_table(data.processed_path / f"{s}.parquet").to_pandas() for s in SPLITS}


def test_outputs_and_schema(raw_config):
    schema = prepare(raw_config, FeatureConfig())
    out = raw_config.processed_path
    assert sorted(p.name for p in out.iterdir()) == [
        "schema.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
        "vocab",
    ]
    assert Schema.load(out / "schema.json") == schema
    assert list(schema.fields) == [
        "user_id",
        "movie_id",
        "gender",
        "age",
        "occupation",
        "zip_prefix",
        "genres",
    ]
    genres = schema.fields["genres"]
    assert genres.feature_type is FeatureType.SEQUENCE and genres.max_len == 6
    assert schema.fields["gender"].vocabulary_size == 3  # M, F, OOV
    table = pq.read_table(out / "train.parquet")
    assert str(table.schema.field("user_id").type) == "int32"
    assert str(table.schema.field("genres").type) == "fixed_size_list<element: int32>[6]"
    for name, spec in schema.fields.items():
        vocab = pq.read_table(out / "vocab" / f"{name}.parquet")
        assert vocab.num_rows == spec.vocabulary_size
        assert vocab.column("index").to_pylist() == list(range(vocab.num_rows))


def test_split_sizes_disjoint_complete_and_seeded(raw_config):
    prepare(raw_config, FeatureConfig())
    first = read_splits(raw_config)
    assert [len(first[s]) for s in SPLITS] == [1600, 200, 200]
    keys = [set(zip(f.user_id, f.movie_id, f.timestamp, strict=True)) for f in first.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    prepare(raw_config, FeatureConfig())
    again = read_splits(raw_config)
    for split in SPLITS:
        assert first[split].equals(again[split])
    prepare(replace(raw_config, seed=7), FeatureConfig())
    other = read_splits(replace(raw_config, seed=7))
    assert not first["test"]["timestamp"].equals(other["test"]["timestamp"])


def test_temporal_split_puts_oldest_in_train(raw_config):
    data = replace(raw_config, split="temporal")
    prepare(data, FeatureConfig())
    splits = read_splits(data)
    assert splits["train"].timestamp.max() <= splits["val"].timestamp.min()
    assert splits["val"].timestamp.max() <= splits["test"].timestamp.min()


def test_label_is_rating_at_least_threshold(raw_config):
    data = replace(raw_config, label_threshold=3.0)
    prepare(data, FeatureConfig())
    for frame in read_splits(data).values():
        assert (frame.label == (frame.rating >= 3).astype(np.int8)).all()


def test_vocabularies_come_from_train_only(tmp_path):
    """Vocabulary values and counts are exactly those of the training rows."""
    raw_config = small_data_config(tmp_path)
    release = write_ml100k_folder(tmp_path / "release", n_movies=400, n_ratings=1000)
    write_raw(parse_ml100k(release), raw_config.raw_path, raw_config.dataset)
    prepare(raw_config, FeatureConfig())
    raw = read_raw(raw_config.raw_path)
    features = rating_features(raw, raw_config, FeatureConfig())
    train_rows = split_rows(features.timestamp, raw_config)["train"]
    train_movies = raw.ratings.column("movie_id").to_numpy()[train_rows]
    vocab = pq.read_table(raw_config.processed_path / "vocab" / "movie_id.parquet").to_pandas()
    counts = dict(zip(*np.unique(train_movies, return_counts=True), strict=True))
    assert dict(zip(vocab.value[1:], vocab["count"][1:], strict=True)) == counts
    all_movies = set(raw.ratings.column("movie_id").to_numpy())
    assert set(counts) < all_movies  # some movies are rated only outside train


def test_genre_and_demographic_counts_come_from_train_rows(raw_config):
    """Counts weighted per user or movie equal counting the training rows one by one."""
    prepare(raw_config, FeatureConfig())
    raw = read_raw(raw_config.raw_path)
    features = rating_features(raw, raw_config, FeatureConfig())
    train_rows = split_rows(features.timestamp, raw_config)["train"]
    frame = raw_feature_frame(raw, train_rows, SEED_FIELDS)
    vocab_dir = raw_config.processed_path / "vocab"

    genres = pq.read_table(vocab_dir / "genres.parquet").to_pandas()
    expected = frame["genres"].explode().value_counts()
    assert dict(zip(genres.value[1:], genres["count"][1:], strict=True)) == expected.to_dict()
    occupations = pq.read_table(vocab_dir / "occupation.parquet").to_pandas()
    expected = frame["occupation"].value_counts()
    assert dict(zip(occupations.value[1:], occupations["count"][1:], strict=True)) == (
        expected.to_dict()
    )


def test_unseen_values_map_to_zero(raw_config):
    """min_count above every count leaves only OOV: all indices become 0."""
    feature = FeatureConfig(min_count=10_000)
    schema = prepare(raw_config, feature)
    assert all(spec.vocabulary_size == 1 for spec in schema.fields.values())
    frame = read_splits(raw_config)["val"]
    assert (frame[list(schema.fields)[:-1]] == 0).all().all()
    assert all((row == 0).all() for row in frame["genres"])


def test_encoded_rows_decode_to_the_raw_features(raw_config):
    """Round trip: every encoded field decodes (via its vocabulary) to the raw join."""
    feature = FeatureConfig()
    raw = read_raw(raw_config.raw_path)
    features = rating_features(raw, raw_config, feature)
    rows = split_rows(features.timestamp, raw_config)["train"]
    vocabs = fit_vocabularies(features, rows, feature)
    encoded = encode_split(features, rows, vocabs, feature).to_pandas()
    expected = raw_feature_frame(raw, rows, SEED_FIELDS)
    expected["age"] = age_bucket(expected["age"].to_numpy())
    expected["zip_prefix"] = expected["zip_code"].str[:3].str.upper()
    for name in ["user_id", "movie_id", "gender", "age", "occupation", "zip_prefix"]:
        values = np.array([None, *vocabs[name].values], dtype=object)
        assert values[encoded[name].to_numpy()].tolist() == expected[name].tolist(), name
    genre_values = np.array([None, *vocabs["genres"].values], dtype=object)
    decoded = [[genre_values[i] for i in row if i] for row in encoded["genres"]]
    assert decoded == [list(g)[:6] for g in expected["genres"]]


def test_failed_prepare_leaves_previous_output(raw_config, monkeypatch):
    """An error midway writes nothing: the old folder stays, no temp folders remain."""
    prepare(raw_config, FeatureConfig())
    before = (raw_config.processed_path / "train.parquet").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("deepfm.data.prepare.Vocabulary.to_arrow", explode)
    with pytest.raises(OSError, match="disk full"):
        prepare(replace(raw_config, seed=1), FeatureConfig())
    assert (raw_config.processed_path / "train.parquet").read_bytes() == before
    assert [p.name for p in raw_config.processed_path.parent.iterdir()] == ["ml-100k"]


def test_missing_raw_data_names_the_folder(tmp_path):
    data = small_data_config(tmp_path)
    ratings = re.escape(str(data.raw_path / "ratings.parquet"))
    with pytest.raises(RawDataError, match=rf"^{ratings}: missing; run the download stage first$"):
        prepare(data, FeatureConfig())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # every rating is >= 1: 100% positives
        (
            {"label_threshold": 1.0},
            r"^data\.label_threshold 1\.0 makes 100% of the 1600 train ratings of ml-100k "
            r"positive; choose a threshold that leaves both labels",
        ),
        (
            {"split_ratios": (0.9996, 0.0002, 0.0002)},
            r"^data\.split_ratios \[0\.9996, 0\.0002, 0\.0002\] leave the val split of "
            r"ml-100k empty \(2000 ratings\); give every split a larger share$",
        ),
    ],
)
def test_impossible_splits_are_refused_before_writing(raw_config, changes, message):
    prepare(raw_config, FeatureConfig())
    before = {p: p.read_bytes() for p in raw_config.processed_path.rglob("*") if p.is_file()}

    with pytest.raises(ConfigError, match=message):
        prepare(replace(raw_config, **changes), FeatureConfig())

    after = {p: p.read_bytes() for p in raw_config.processed_path.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in raw_config.processed_path.parent.iterdir()] == ["ml-100k"]


def test_one_label_in_a_held_out_split_is_refused():
    """AUC needs both labels in val and test too; the message names the split."""
    label = np.array([1, 0, 1, 0, 1, 1], dtype=np.int8)
    rows = {"train": np.array([0, 1, 2, 3]), "val": np.array([4]), "test": np.array([5])}
    data = DataConfig(label_threshold=4.0)
    with pytest.raises(ConfigError, match=r"makes 100% of the 1 val ratings of ml-100k positive"):
        check_splits(rows, label, data)
    rows["val"] = np.array([3, 4])
    with pytest.raises(ConfigError, match=r"makes 100% of the 1 test ratings"):
        check_splits(rows, label, data)
