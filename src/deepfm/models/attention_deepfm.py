"""AttentionDeepFM: DeepFM plus AutoInt-style self-attention across fields."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.layers.fm import FMInteraction
from deepfm.models.layers.mlp import MLP


class AttentionDeepFM(nn.Module):
    """`bias + first_order + FM + Linear(flatten(SelfAttention(field_embeddings))) + MLP`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common width of the interacting field vectors; attention keeps it.
        attention_layers: stacked self-attention layers.
        attention_heads: heads per layer; must divide `fm_embed_dim`.
        attention_residual: add each layer's input to its output.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Shapes:
        - input: `batch`, field name -> index tensor, as `FeatureEmbedding` takes it.
        - output: logits `(B,)`.

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
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim)
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
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        first_order, field_embeddings, flat_embeddings = self.embedding(batch)
        attended = self.attention(field_embeddings)  # (B, F, fm_embed_dim)
        attention_logit = self.attention_output(attended.flatten(start_dim=1))  # (B, 1)
        logits = (
            self.bias
            + first_order
            + self.fm(field_embeddings)
            + attention_logit
            + self.mlp(flat_embeddings)
        )
        return logits.squeeze(1)  # (B, 1) -> (B,)
