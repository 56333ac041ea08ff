"""DeepFM: a factorization machine and a deep network sharing one set of embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.fm_interaction import FMInteraction
from deepfm.models.layers.mlp import MLP


class DeepFM(CTRModel):
    """`bias + first_order + FM(field_embeddings) + MLP(flat_embeddings)`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the interacting field vectors.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = DeepFM(schema, fm_embed_dim=16, hidden_units=(256, 128))
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.fm(views.field_embeddings), self.mlp(views.flat_embeddings)]
