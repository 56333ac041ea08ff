"""Wide & Deep: a linear model and a deep network trained jointly."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class WideDeep(CTRModel):
    """`bias + first_order + MLP(flat_embeddings)` (Cheng et al. 2016).

    The wide part is the linear model over the one-hot fields: the bias and the first-order
    weights. The paper also feeds hand-made cross-product columns to it; no such columns exist
    here, so the wide part is first order only. The deep part reads the raw field vectors, so
    the model owns no projections. `DNN` is this model with `wide = False`.

    Args:
        schema: the input fields.
        fm_embed_dim: unused (no field vectors are read); kept for a uniform constructor.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = WideDeep(schema, hidden_units=(256, 128))
        logits = model(batch)  # (B,)
    """

    wide = True  # the bias and first-order term

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim, linear=self.wide, field_embeddings=False)
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.mlp(views.flat_embeddings)]
