"""AutoInt and AutoInt+: stacked self-attention across fields, with or without a deep network."""

from __future__ import annotations

from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.model_config import AutoIntConfig, AutoIntPlusConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import SelfAttentionStack
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class AutoInt(CTRModel):
    """`Linear(flatten(SelfAttention^L(field_embeddings)))` (Song et al. 2019).

    As in the paper: no bias or first-order term, no FM, no MLP; the first attention layer
    maps each field vector from `fm_embed_dim` to `attention_dim`, the later ones keep it. The
    default width, 16, is AttentionDeepFM's, so what AttentionDeepFM adds (first order, FM,
    MLP) can be measured against this model; the paper's 2 heads of 32 (`attention_dim=64`)
    train about 2.4 times slower on two CPU cores.

    Args:
        schema: the input fields.
        config: `model.autoint`, the attention layers.
        fm_embed_dim: the common width of the field vectors the attention reads.

    Example::

        model = AutoInt(schema, AutoIntConfig(attention_heads=2, attention_dim=64))  # paper
        logits = model(batch)  # (B,)
    """

    linear = False

    def __init__(self, schema: Schema, config: AutoIntConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        self.attention = SelfAttentionStack(
            fm_embed_dim,
            config.attention_dim,
            config.attention_layers,
            config.attention_heads,
            config.attention_residual,
        )
        self.attention_output = nn.Linear(schema.num_fields * config.attention_dim, 1)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        attended = self.attention(views.field_embeddings)  # (B, F, attention_dim)
        return [self.attention_output(attended.flatten(start_dim=1))]


class AutoIntPlus(AutoInt):
    """AutoInt+: `AutoInt + MLP(flat_embeddings)`, the paper's variant with a deep network.

    Args:
        schema, fm_embed_dim: as in `AutoInt`.
        config: `model.autoint_plus`, the attention layers and the MLP.

    Example::

        model = AutoIntPlus(schema, AutoIntPlusConfig(hidden_units=(256, 128)))
        logits = model(batch)  # (B,)
    """

    def __init__(self, schema: Schema, config: AutoIntPlusConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, config, fm_embed_dim)
        self.mlp = MLP(schema.total_embedding_dim, config.hidden_units, config.dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [*super().logit_parts(views), self.mlp(views.flat_embeddings)]
