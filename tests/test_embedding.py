"""FeatureEmbedding: the seed guide's public contract (module layout, counts, shapes, OOV)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.layers.embedding import FeatureEmbedding

SEED_SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 944, 16),
        FieldSpec("movie_id", FeatureType.SPARSE, 1679, 16),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("age", FeatureType.SPARSE, 8, 4),
        FieldSpec("occupation", FeatureType.SPARSE, 22, 8),
        FieldSpec("zip_prefix", FeatureType.SPARSE, 383, 8),
        FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6),
    ]
)

SEED_PRINTED_MODULE = """\
FeatureEmbedding(
  (second_order_embeddings): ModuleDict(
    (user_id): Embedding(944, 16, padding_idx=0)
    (movie_id): Embedding(1679, 16, padding_idx=0)
    (gender): Embedding(3, 4, padding_idx=0)
    (age): Embedding(8, 4, padding_idx=0)
    (occupation): Embedding(22, 8, padding_idx=0)
    (zip_prefix): Embedding(383, 8, padding_idx=0)
    (genres): EmbeddingBag(20, 8, mode='mean', padding_idx=0)
  )
  (first_order_embeddings): ModuleDict(
    (user_id): Embedding(944, 1, padding_idx=0)
    (movie_id): Embedding(1679, 1, padding_idx=0)
    (gender): Embedding(3, 1, padding_idx=0)
    (age): Embedding(8, 1, padding_idx=0)
    (occupation): Embedding(22, 1, padding_idx=0)
    (zip_prefix): Embedding(383, 1, padding_idx=0)
    (genres): EmbeddingBag(20, 1, mode='mean', padding_idx=0)
  )
  (projections): ModuleDict(
    (gender): Linear(in_features=4, out_features=16, bias=False)
    (age): Linear(in_features=4, out_features=16, bias=False)
    (occupation): Linear(in_features=8, out_features=16, bias=False)
    (zip_prefix): Linear(in_features=8, out_features=16, bias=False)
    (genres): Linear(in_features=8, out_features=16, bias=False)
  )
)"""


def random_batch(schema: Schema, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Random indices (0, the OOV / padding index, included) for every field."""
    batch = {}
    for name, spec in schema.fields.items():
        shape = (
            (batch_size, spec.max_len)
            if spec.feature_type is FeatureType.SEQUENCE
            else (batch_size,)
        )
        batch[name] = torch.randint(0, spec.vocabulary_size, shape, generator=generator)
    return batch


@pytest.fixture
def embedding() -> FeatureEmbedding:
    torch.manual_seed(0)
    return FeatureEmbedding(SEED_SCHEMA, fm_embed_dim=16)


@pytest.fixture
def batch() -> dict[str, Tensor]:
    return random_batch(SEED_SCHEMA, 4, torch.Generator().manual_seed(1))


def test_printed_module_matches_the_seed(embedding: FeatureEmbedding) -> None:
    assert repr(embedding) == SEED_PRINTED_MODULE


def test_parameter_counts_match_the_seed(embedding: FeatureEmbedding) -> None:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(embedding) == 48_983
    assert all(p.requires_grad for p in embedding.parameters())
    assert count(embedding.second_order_embeddings) == 45_412
    assert count(embedding.first_order_embeddings) == 3_059
    assert count(embedding.projections) == 512


def test_output_shapes(embedding: FeatureEmbedding, batch: dict[str, Tensor]) -> None:
    first_order, field_embeddings, flat_embeddings = embedding(batch)
    assert first_order.shape == (4, 1)
    assert field_embeddings.shape == (4, 7, 16)
    assert flat_embeddings.shape == (4, 64)


def test_padding_rows_start_at_zero(embedding: FeatureEmbedding) -> None:
    for tables in (embedding.second_order_embeddings, embedding.first_order_embeddings):
        for table in tables.values():
            assert torch.count_nonzero(table.weight[0]) == 0
            assert torch.count_nonzero(table.weight[1:]) > 0


def test_all_oov_batch_gives_exact_zeros(embedding: FeatureEmbedding) -> None:
    oov_batch = {name: torch.zeros(3, dtype=torch.long) for name in SEED_SCHEMA.fields}
    oov_batch["genres"] = torch.zeros(3, 6, dtype=torch.long)
    for output in embedding(oov_batch):
        assert torch.equal(output, torch.zeros_like(output))


def test_outputs_are_the_per_field_lookups_in_schema_order(
    embedding: FeatureEmbedding, batch: dict[str, Tensor]
) -> None:
    first_order, field_embeddings, flat_embeddings = embedding(batch)
    offset = 0
    expected_first_order = torch.zeros(4, 1)
    for position, (name, spec) in enumerate(SEED_SCHEMA.fields.items()):
        raw = embedding.second_order_embeddings[name](batch[name])
        torch.testing.assert_close(flat_embeddings[:, offset : offset + spec.embedding_dim], raw)
        projected = embedding.projections[name](raw) if name in embedding.projections else raw
        torch.testing.assert_close(field_embeddings[:, position], projected)
        expected_first_order += embedding.first_order_embeddings[name](batch[name])
        offset += spec.embedding_dim
    assert offset == flat_embeddings.shape[1]
    torch.testing.assert_close(first_order, expected_first_order)


def test_sequence_mean_pooling_ignores_padding(embedding: FeatureEmbedding) -> None:
    batch = {name: torch.zeros(3, dtype=torch.long) for name in SEED_SCHEMA.fields}
    batch["genres"] = torch.tensor([[3, 5, 0, 0, 0, 0], [0, 3, 0, 5, 0, 0], [0, 0, 0, 0, 0, 0]])
    first_order, _, flat_embeddings = embedding(batch)
    genres = flat_embeddings[:, 56:64]
    table = embedding.second_order_embeddings["genres"].weight
    weights = embedding.first_order_embeddings["genres"].weight
    expected = (table[3] + table[5]) / 2
    torch.testing.assert_close(genres[0], expected)
    torch.testing.assert_close(genres[1], expected)
    assert torch.equal(genres[2], torch.zeros(8))
    torch.testing.assert_close(first_order[:2, 0], ((weights[3] + weights[5]) / 2).expand(2))
    assert first_order[2, 0] == 0


def test_int32_and_int64_indices_give_identical_outputs(
    embedding: FeatureEmbedding, batch: dict[str, Tensor]
) -> None:
    int32_batch = {name: indices.int() for name, indices in batch.items()}
    for from_int64, from_int32 in zip(embedding(batch), embedding(int32_batch), strict=True):
        assert torch.equal(from_int64, from_int32)


def test_views_built_without_are_none_and_not_owned(batch: dict[str, Tensor]) -> None:
    """A model that reads only flat embeddings (DNN) owns no first-order tables or projections."""
    torch.manual_seed(0)
    full = FeatureEmbedding(SEED_SCHEMA, fm_embed_dim=16)
    torch.manual_seed(0)  # the per-field tables are built first: the same initial values
    flat = FeatureEmbedding(SEED_SCHEMA, fm_embed_dim=16, first_order=False, field_embeddings=False)
    assert sum(p.numel() for p in flat.parameters()) == 45_412
    assert not hasattr(flat, "first_order_embeddings") and not hasattr(flat, "projections")
    first_order, field_embeddings, flat_embeddings = flat(batch)
    assert first_order is None and field_embeddings is None
    assert torch.equal(flat_embeddings, full(batch).flat_embeddings)
