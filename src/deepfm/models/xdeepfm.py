"""xDeepFM: a Compressed Interaction Network and a deep network sharing one set of embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.cin import CIN
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class XDeepFM(CTRModel):
    """`bias + first_order + CIN(field_embeddings) + MLP(flat_embeddings)`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the interacting field vectors.
        cin_layer_sizes: feature maps made by each CIN layer.
        cin_split_half: pass half of each non-final CIN layer on and pool the other half.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = XDeepFM(schema, cin_layer_sizes=(64, 64, 64), cin_split_half=True)
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        cin_layer_sizes: Sequence[int] = (16, 16),
        cin_split_half: bool = True,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.cin = CIN(schema.num_fields, cin_layer_sizes, cin_split_half)
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.cin(views.field_embeddings), self.mlp(views.flat_embeddings)]
