"""DeepFM: a factorization machine and a deep network sharing one set of embeddings."""

from __future__ import annotations

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.model_config import DeepFMConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.fm_interaction import FMInteraction
from deepfm.models.layers.mlp import MLP


class DeepFM(CTRModel):
    """`bias + first_order + FM(field_embeddings) + MLP(flat_embeddings)`.

    Args:
        schema: the input fields.
        config: `model.deepfm`, the MLP head (`DNNConfig`).
        fm_embed_dim: the common width of the interacting field vectors.

    Example::

        model = DeepFM(schema, DeepFMConfig(hidden_units=(256, 128)), fm_embed_dim=16)
        logits = model(batch)  # (B,)
    """

    def __init__(self, schema: Schema, config: DeepFMConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.mlp = MLP(schema.total_embedding_dim, config.hidden_units, config.dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.fm(views.field_embeddings), self.mlp(views.flat_embeddings)]
