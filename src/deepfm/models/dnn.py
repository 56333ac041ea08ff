"""Plain deep network over the concatenated raw field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class DNN(CTRModel):
    """`MLP(flat_embeddings)`: no bias or first-order term, no explicit interactions.

    It reads only the raw per-field vectors, so it owns no first-order tables or projections.

    Args:
        schema: the input fields.
        fm_embed_dim: unused (DNN has no field vectors); kept for a uniform constructor.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = DNN(schema, hidden_units=(256, 128))
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim, linear=False, field_embeddings=False)
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.mlp(views.flat_embeddings)]
