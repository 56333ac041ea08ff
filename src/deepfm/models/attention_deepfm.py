"""AttentionDeepFM: DeepFM plus AutoInt-style self-attention across fields."""

from __future__ import annotations

from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.model_config import AttentionDeepFMConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import SelfAttentionStack
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.fm_interaction import FMInteraction
from deepfm.models.layers.mlp import MLP


class AttentionDeepFM(CTRModel):
    """`bias + first_order + FM + Linear(flatten(SelfAttention(field_embeddings))) + MLP`.

    Attention keeps the width `fm_embed_dim`, so `config.attention_heads` must divide it.

    Args:
        schema: the input fields.
        config: `model.attention_deepfm`, the attention layers and the MLP head.
        fm_embed_dim: the common width of the interacting field vectors.

    Example::

        model = AttentionDeepFM(schema, AttentionDeepFMConfig(attention_layers=3))
        logits = model(batch)  # (B,)
    """

    def __init__(
        self, schema: Schema, config: AttentionDeepFMConfig, fm_embed_dim: int = 16
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.attention = SelfAttentionStack(
            fm_embed_dim,
            fm_embed_dim,
            config.attention_layers,
            config.attention_heads,
            config.attention_residual,
        )
        self.attention_output = nn.Linear(schema.num_fields * fm_embed_dim, 1)
        self.mlp = MLP(schema.total_embedding_dim, config.hidden_units, config.dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        attended = self.attention(views.field_embeddings)  # (B, F, fm_embed_dim)
        return [
            self.fm(views.field_embeddings),
            self.attention_output(attended.flatten(start_dim=1)),
            self.mlp(views.flat_embeddings),
        ]
