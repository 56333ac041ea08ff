"""AttentionDeepFM: DeepFM plus AutoInt-style self-attention across fields."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.fm_interaction import FMInteraction
from deepfm.models.layers.mlp import MLP


class AttentionDeepFM(CTRModel):
    """`bias + first_order + FM + Linear(flatten(SelfAttention(field_embeddings))) + MLP`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the interacting field vectors; attention keeps it.
        attention_layers: stacked self-attention layers.
        attention_heads: heads per layer; must divide `fm_embed_dim`.
        attention_residual: add each layer's input to its output.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = AttentionDeepFM(schema, attention_layers=3, attention_heads=2)
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        attention_layers: int = 3,
        attention_heads: int = 2,
        attention_residual: bool = True,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(
                    fm_embed_dim, fm_embed_dim, attention_heads, attention_residual
                )
                for _ in range(attention_layers)
            )
        )
        self.attention_output = nn.Linear(schema.num_fields * fm_embed_dim, 1)
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        attended = self.attention(views.field_embeddings)  # (B, F, fm_embed_dim)
        return [
            self.fm(views.field_embeddings),
            self.attention_output(attended.flatten(start_dim=1)),
            self.mlp(views.flat_embeddings),
        ]
