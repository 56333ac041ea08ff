"""Wide & Deep: a linear model and a deep network trained jointly."""

from __future__ import annotations

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.model_config import WideDeepConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class WideDeep(CTRModel):
    """`bias + first_order + MLP(flat_embeddings)` (Cheng et al. 2016).

    The wide part is the linear model over the one-hot fields: the bias and the first-order
    weights. The paper also feeds hand-made cross-product columns to it; no such columns exist
    here, so the wide part is first order only. The deep part reads the raw field vectors, so
    the model owns no projections. `DNN` is this model with `linear = False`.

    Args:
        schema: the input fields.
        config: `model.wide_deep`, the MLP head (`DNNConfig`).
        fm_embed_dim: unused (no field vectors are read); kept for a uniform constructor.

    Example::

        model = WideDeep(schema, WideDeepConfig(hidden_units=(256, 128)))
        logits = model(batch)  # (B,)
    """

    reads_field_embeddings = False

    def __init__(self, schema: Schema, config: WideDeepConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        self.mlp = MLP(schema.total_embedding_dim, config.hidden_units, config.dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [self.mlp(views.flat_embeddings)]
