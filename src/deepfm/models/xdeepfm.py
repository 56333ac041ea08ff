"""xDeepFM: a Compressed Interaction Network and a deep network sharing one set of embeddings."""

from __future__ import annotations

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.model_config import XDeepFMConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.cin import CIN
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class XDeepFM(CTRModel):
    """`bias + first_order + CIN(field_embeddings) + MLP(flat_embeddings)`.

    Args:
        schema: the input fields.
        config: `model.xdeepfm`, the CIN and the MLP head.
        fm_embed_dim: the common width of the interacting field vectors.

    Example::

        model = XDeepFM(schema, XDeepFMConfig(cin_layer_sizes=(64, 64, 64)))
        logits = model(batch)  # (B,)
    """

    def __init__(self, schema: Schema, config: XDeepFMConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        self.cin = CIN(schema.num_fields, config.cin_layer_sizes, config.cin_split_half)
        self.mlp = MLP(schema.total_embedding_dim, config.hidden_units, config.dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.cin(views.field_embeddings), self.mlp(views.flat_embeddings)]
