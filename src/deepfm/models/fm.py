"""Factorization machine: bias, first-order weights and pairwise field interactions."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.layers.fm import FMInteraction


class FM(nn.Module):
    """`bias + first_order + FM(field_embeddings)`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the interacting field vectors.

    Shapes:
        - input: `batch`, field name -> index tensor, as `FeatureEmbedding` takes it.
        - output: logits `(B,)`.

    Example::

        model = FM(schema, fm_embed_dim=16)
        logits = model(batch)  # (B,)
    """

    def __init__(self, schema: Schema, fm_embed_dim: int = 16) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        first_order, field_embeddings, _ = self.embedding(batch)
        logits = self.bias + first_order + self.fm(field_embeddings)  # (B, 1)
        return logits.squeeze(1)
