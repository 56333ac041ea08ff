"""CTRModel: what every model shares, so that a model file shows only its interaction."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.layers.embedding import EmbeddingViews, FeatureEmbedding


class CTRModel(nn.Module):
    """Embeds a batch, sums the logit parts a model adds, and returns one logit per row.

    A model subclasses it, takes its `model.<name>` config section, builds its interaction
    after `super().__init__`, and returns its logit parts, each `(B, 1)`, from `logit_parts`.
    Two class attributes say what the model reads: with `linear` the base adds a global bias
    and the first-order term in front of the parts (the "wide" part of FM, DeepFM and the
    like); without `reads_field_embeddings` the embedding builds no projections (a model owns
    only what it trains). The parts are summed left to right.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the field vectors the interactions read.

    Shapes:
        - input: `batch`, field name -> index tensor, as `FeatureEmbedding` takes it.
        - output: logits `(B,)`.

    Example::

        class LogisticRegression(CTRModel):
            reads_field_embeddings = False

            def logit_parts(self, views):
                return []  # bias + first order only

        logits = LogisticRegression(schema)(batch)  # (B,)
    """

    linear: ClassVar[bool] = True
    reads_field_embeddings: ClassVar[bool] = True

    def __init__(self, schema: Schema, fm_embed_dim: int = 16) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(
            schema, fm_embed_dim, self.linear, self.reads_field_embeddings
        )
        self.bias = nn.Parameter(torch.zeros(1)) if self.linear else None

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        """The model's own logit terms, each `(B, 1)`."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        views = self.embedding(batch)
        parts = self.logit_parts(views)
        if self.bias is not None:
            parts = [self.bias, views.first_order, *parts]
        logits = parts[0]
        for part in parts[1:]:
            logits = logits + part
        return logits.squeeze(1)  # (B, 1) -> (B,)
