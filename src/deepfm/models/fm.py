"""Factorization machine: bias, first-order weights and pairwise field interactions."""

from __future__ import annotations

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.model_config import FMConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.fm_interaction import FMInteraction


class FM(CTRModel):
    """`bias + first_order + FM(field_embeddings)`.

    Args:
        schema: the input fields.
        config: `model.fm` (no knobs; taken for a uniform constructor).
        fm_embed_dim: the common width of the interacting field vectors.

    Example::

        model = FM(schema, FMConfig(), fm_embed_dim=16)
        logits = model(batch)  # (B,)
    """

    def __init__(self, schema: Schema, config: FMConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.fm(views.field_embeddings)]
