"""CTRModel: what every model shares, so that a model file shows only its interaction."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.layers.embedding import EmbeddingViews, FeatureEmbedding


class CTRModel(nn.Module):
    """Embeds a batch, sums the logit parts a model adds, and returns one logit per row.

    A model subclasses it, builds its interaction after `super().__init__`, and returns its
    logit parts, each `(B, 1)`, from `logit_parts`. With `linear` the base adds a global bias
    and the first-order term in front of them (the "wide" part of FM, DeepFM and the like);
    the parts are summed left to right.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the field vectors the interactions read.
        linear: add a global bias and the first-order term to the logit.
        field_embeddings: the model reads `field_embeddings`; without it the embedding
            builds no projections (a model owns only what it trains).

    Shapes:
        - input: `batch`, field name -> index tensor, as `FeatureEmbedding` takes it.
        - output: logits `(B,)`.

    Example::

        class LogisticRegression(CTRModel):
            def logit_parts(self, views):
                return []  # bias + first order only

        logits = LogisticRegression(schema, field_embeddings=False)(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        linear: bool = True,
        field_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim, linear, field_embeddings)
        self.bias = nn.Parameter(torch.zeros(1)) if linear else None

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
