"""Per-field embedding tables and the three views of them that every model reads."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor, nn

from deepfm.data.schema import FeatureType, FieldSpec, Schema

EMBEDDING_INIT_STD = 1e-2


class EmbeddingViews(NamedTuple):
    """What `FeatureEmbedding` returns; a view it was built without is None.

    Args:
        first_order: `(B, 1)`, the sum of the fields' first-order weights.
        field_embeddings: `(B, F, fm_embed_dim)`, one projected vector per field.
        flat_embeddings: `(B, total_embedding_dim)`, the raw vectors concatenated.

    Example::

        views = FeatureEmbedding(schema)(batch)
        views.flat_embeddings.shape  # (B, schema.total_embedding_dim)
    """

    first_order: Tensor | None  # (B, 1)
    field_embeddings: Tensor | None  # (B, F, fm_embed_dim)
    flat_embeddings: Tensor  # (B, total_embedding_dim)


class FeatureEmbedding(nn.Module):
    """Looks up every schema field and returns its first-order, field and flat views.

    Index 0 of every table is the OOV / padding row: it starts at zero and gets no gradient,
    so unknown values contribute nothing. A sequence field is mean-pooled over its non-padding
    entries, as its `EmbeddingBag(mode="mean", padding_idx=0)` would; an all-padding row pools
    to zeros.

    The lookups read the tables' weights directly rather than calling the modules: sparse
    fields' first-order weights are gathered in one lookup, OOV rows are masked instead of
    relying on `padding_idx` (whose backward is slow on CPU), and a sequence field is pooled by
    multiplying its table with a `(B, vocabulary_size)` matrix of pooling weights, which suits
    small vocabularies such as genres.

    Args:
        schema: the ordered fields, at least one of them sparse; every output follows their
            order.
        fm_embed_dim: the common width of `field_embeddings`; a field of another width is
            mapped to it by a bias-free linear projection.
        first_order: build the first-order tables (one scalar weight per value); without
            them the `first_order` view is None.
        field_embeddings: build the projections to `fm_embed_dim`; without them the
            `field_embeddings` view is None. A model owns only the parts it trains.

    Shapes:
        - input: `batch[name]` is an int32 or int64 index tensor, `(B,)` for a sparse field and
          `(B, max_len)` (0-padded) for a sequence field.
        - output: `first_order (B, 1)`, the sum over fields of each value's scalar weight;
          `field_embeddings (B, F, fm_embed_dim)`, one projected vector per field;
          `flat_embeddings (B, schema.total_embedding_dim)`, raw vectors concatenated.

    Example::

        schema = Schema.of([
            FieldSpec("user_id", FeatureType.SPARSE, 944, 16),
            FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6),
        ])
        embedding = FeatureEmbedding(schema, fm_embed_dim=16)
        batch = {"user_id": torch.tensor([3, 0]), "genres": torch.tensor([[1, 4, 0, 0, 0, 0]] * 2)}
        first_order, field_embeddings, flat_embeddings = embedding(batch)
        # shapes (2, 1), (2, 2, 16), (2, 24)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        first_order: bool = True,
        field_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.with_first_order = first_order
        self.with_field_embeddings = field_embeddings
        fields = list(schema.fields.values())
        self.sparse_fields = [s.name for s in fields if s.feature_type is FeatureType.SPARSE]
        self.sequence_fields = [s.name for s in fields if s.feature_type is FeatureType.SEQUENCE]
        if not self.sparse_fields:
            raise ValueError("FeatureEmbedding needs at least one sparse field")
        self.second_order_embeddings = nn.ModuleDict(
            {spec.name: _embedding_table(spec, spec.embedding_dim) for spec in fields}
        )
        if first_order:
            self.first_order_embeddings = nn.ModuleDict(
                {spec.name: _embedding_table(spec, 1) for spec in fields}
            )
        if field_embeddings:
            self.projections = nn.ModuleDict(
                {
                    spec.name: nn.Linear(spec.embedding_dim, fm_embed_dim, bias=False)
                    for spec in fields
                    if spec.embedding_dim != fm_embed_dim
                }
            )
        # Where each sparse field's rows start in the concatenation of their first-order tables.
        sizes = [schema.fields[name].vocabulary_size for name in self.sparse_fields]
        self.register_buffer(
            "sparse_row_offsets",
            torch.tensor([0, *itertools.accumulate(sizes)][:-1]),
            persistent=False,
        )

    def forward(self, batch: dict[str, Tensor]) -> EmbeddingViews:
        sparse_indices = self._sparse_indices(batch)  # (B, S)
        present = (sparse_indices != 0).float()  # (B, S); 0 marks OOV, whose rows get no gradient
        poolings = self._poolings(batch)
        raw_embeddings = self._raw_embeddings(batch, present, poolings)
        first_order = None
        if self.with_first_order:
            first_order = self._first_order(sparse_indices, present, poolings)  # (B, 1)
        flat_embeddings = torch.cat(raw_embeddings, dim=1)  # (B, total_dim)
        field_embeddings = None
        if self.with_field_embeddings:
            field_embeddings = torch.stack(
                [
                    self.projections[name](embedding) if name in self.projections else embedding
                    for name, embedding in zip(
                        self.second_order_embeddings, raw_embeddings, strict=True
                    )
                ],
                dim=1,
            )  # (B, F, fm_embed_dim)
        return EmbeddingViews(first_order, field_embeddings, flat_embeddings)

    def _sparse_indices(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.stack([batch[name] for name in self.sparse_fields], dim=1)  # (B, S)

    def _poolings(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per sequence field, the `(B, V)` weights that mean-pool its table (see below)."""
        return {
            name: _mean_pooling_weights(batch[name], self.second_order_embeddings[name].weight)
            for name in self.sequence_fields
        }

    def _raw_embeddings(
        self, batch: dict[str, Tensor], present: Tensor, poolings: dict[str, Tensor]
    ) -> list[Tensor]:
        """Each field's `(B, dim)` vector, in schema order."""
        raw_embeddings = {}
        for column, name in enumerate(self.sparse_fields):
            table = self.second_order_embeddings[name].weight
            raw_embeddings[name] = table.index_select(0, batch[name]) * present[:, column, None]
        for name, pooling in poolings.items():
            raw_embeddings[name] = pooling @ self.second_order_embeddings[name].weight
        return [raw_embeddings[name] for name in self.second_order_embeddings]

    def _first_order(
        self, sparse_indices: Tensor, present: Tensor, poolings: dict[str, Tensor]
    ) -> Tensor:
        """`(B, 1)`: the sparse fields' weights in one lookup, plus each sequence field's mean."""
        table = torch.cat(
            [self.first_order_embeddings[name].weight for name in self.sparse_fields]
        )  # (sum of sparse vocabularies, 1)
        rows = (sparse_indices + self.sparse_row_offsets).view(-1)  # (B * S,)
        weights = table.index_select(0, rows).view_as(present) * present  # (B, S)
        first_order = weights.sum(dim=1, keepdim=True)
        for name, pooling in poolings.items():
            first_order = first_order + pooling @ self.first_order_embeddings[name].weight
        return first_order


def _embedding_table(spec: FieldSpec, dim: int) -> nn.Embedding | nn.EmbeddingBag:
    if spec.feature_type is FeatureType.SEQUENCE:
        table = nn.EmbeddingBag(spec.vocabulary_size, dim, mode="mean", padding_idx=0)
    else:
        table = nn.Embedding(spec.vocabulary_size, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def _mean_pooling_weights(indices: Tensor, table: Tensor) -> Tensor:
    """`(B, L)` 0-padded indices -> `(B, V)`: 1 / (non-padding count) at each non-padding index.

    `pooling @ table` is then the mean of each row's non-padding embeddings; column 0 is all
    zeros, so the padding row gets no gradient.
    """
    present = (indices != 0).to(table.dtype)  # (B, L)
    position_weights = present / present.sum(dim=1, keepdim=True).clamp(min=1)
    pooling = table.new_zeros(indices.shape[0], table.shape[0])
    return pooling.scatter_add_(1, indices.long(), position_weights)  # (B, V)
