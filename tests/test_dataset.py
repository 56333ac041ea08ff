"""CTRDataset and MovieLensAdapter: the seed guide's data API on small data."""

import pytest
import torch
from torch.utils.data import DataLoader

from deepfm.data.dataset import CTRDataset
from deepfm.data.movielens import MovieLensAdapter


@pytest.fixture
def built(raw_config):
    return MovieLensAdapter(raw_config).build()


def test_adapter_prepares_when_missing_then_reads(raw_config, built):
    schema, train_ds, val_ds, test_ds = built
    assert (raw_config.processed_path / "schema.json").is_file()
    assert schema.num_fields == 7
    assert [len(train_ds), len(val_ds), len(test_ds)] == [1600, 200, 200]
    stamp = (raw_config.processed_path / "train.parquet").stat().st_mtime_ns
    MovieLensAdapter(raw_config).build()  # second call reads, does not rewrite
    assert (raw_config.processed_path / "train.parquet").stat().st_mtime_ns == stamp


def test_dataloader_yields_the_seed_shapes(built):
    _, train_ds, _, _ = built
    features, labels = next(iter(DataLoader(train_ds, batch_size=4, shuffle=True)))
    shapes = {name: tuple(tensor.shape) for name, tensor in features.items()}
    assert shapes == {
        "user_id": (4,),
        "movie_id": (4,),
        "gender": (4,),
        "age": (4,),
        "occupation": (4,),
        "zip_prefix": (4,),
        "genres": (4, 6),
    }
    assert all(tensor.dtype == torch.int64 for tensor in features.values())
    assert labels.shape == (4,) and labels.dtype == torch.float32


def test_batch_by_index_equals_rows(built):
    _, train_ds, _, _ = built
    indices = torch.tensor([5, 0, 1599, 42])
    features, labels = train_ds.batch(indices)
    for position, row in enumerate(indices.tolist()):
        row_features, row_label = train_ds[row]
        for name, value in row_features.items():
            assert torch.equal(features[name][position].long(), value)
        assert labels[position] == row_label
    assert features["user_id"].dtype == torch.int32  # columns stay int32 in memory


def test_columns_must_share_length():
    with pytest.raises(ValueError, match="differ in length"):
        CTRDataset({"a": torch.zeros(3, dtype=torch.int32)}, torch.zeros(4))
