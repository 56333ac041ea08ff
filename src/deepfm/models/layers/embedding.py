"""Per-field embedding tables and the three views of them that every model reads."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
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

    The lookups read the tables' weights directly rather than calling the modules, in work
    proportional to the rows a batch looks up, never to a table's size: a sparse field is
    one row gather (OOV rows multiplied by 0, so index 0 gets no gradient), a sequence field
    a gather of its `batch x max_len` rows and a masked mean. After `use_sparse_gradients()`
    (the trainer calls it) every table's gradient is sparse: one row per looked-up index.

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
        self.sparse_gradients = False

    def use_sparse_gradients(self, sparse: bool = True) -> None:
        """Make every table's weight gradient sparse: one row per looked-up index, never a
        `(V, dim)` tensor (what `deepfm.training.optimizers.CTROptimizer` wants), or dense (the
        default, which every torch optimizer takes)."""
        self.sparse_gradients = sparse
        for _, table in self.named_tables():
            table.sparse = sparse  # what DistributedDataParallel reads to expect a sparse grad

    def named_tables(self) -> list[tuple[str, nn.Embedding | nn.EmbeddingBag]]:
        """Every table with the field it belongs to, second-order tables first."""
        tables = list(self.second_order_embeddings.items())
        if self.with_first_order:
            tables += list(self.first_order_embeddings.items())
        return tables

    def forward(self, batch: dict[str, Tensor]) -> EmbeddingViews:
        weights = {name: _lookup_weights(batch[name]) for name in self.second_order_embeddings}
        raw_embeddings = [
            self._lookup(table.weight, batch[name], weights[name])
            for name, table in self.second_order_embeddings.items()
        ]
        first_order = None
        if self.with_first_order:
            first_order = sum(
                self._lookup(table.weight, batch[name], weights[name])
                for name, table in self.first_order_embeddings.items()
            )  # (B, 1)
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

    def _lookup(self, table: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        """`(B, dim)`: the weighted sum of the rows of `indices` (`(B,)` or `(B, max_len)`)."""
        rows = F.embedding(indices.reshape(-1), table, sparse=self.sparse_gradients)
        if indices.dim() == 1:
            return rows * weights
        return (rows.view(*weights.shape, -1) * weights.unsqueeze(2)).sum(dim=1)


def _embedding_table(spec: FieldSpec, dim: int) -> nn.Embedding | nn.EmbeddingBag:
    if spec.feature_type is FeatureType.SEQUENCE:
        table = nn.EmbeddingBag(spec.vocabulary_size, dim, mode="mean", padding_idx=0)
    else:
        table = nn.Embedding(spec.vocabulary_size, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def _lookup_weights(indices: Tensor) -> Tensor:
    """The weight of each looked-up row: `(B, 1)` 1/0 for a sparse field (0 for OOV), `(B, L)`
    1/count over the non-padding entries of a sequence field (all 0 for an all-padding row),
    so padding and OOV rows add nothing and get no gradient."""
    present = (indices != 0).float()
    if indices.dim() == 1:
        return present.unsqueeze(1)
    return present / present.sum(dim=1, keepdim=True).clamp(min=1)
