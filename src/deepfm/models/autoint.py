"""AutoInt and AutoInt+: stacked self-attention across fields, with or without a deep network."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import MultiHeadSelfAttention
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
        fm_embed_dim: the common width of the field vectors the attention reads.
        attention_layers: stacked self-attention layers.
        attention_heads: heads per layer; must divide `attention_dim`.
        attention_dim: width of each field vector after attention (all heads together).
        attention_residual: add each layer's (projected) input to its output.

    Example::

        model = AutoInt(schema, attention_layers=3, attention_heads=2, attention_dim=64)  # paper
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        attention_layers: int = 3,
        attention_heads: int = 2,
        attention_dim: int = 16,
        attention_residual: bool = True,
    ) -> None:
        super().__init__(schema, fm_embed_dim, linear=False)
        widths = [fm_embed_dim] + [attention_dim] * attention_layers
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(width, attention_dim, attention_heads, attention_residual)
                for width in widths[:-1]
            )
        )
        self.attention_output = nn.Linear(schema.num_fields * attention_dim, 1)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        attended = self.attention(views.field_embeddings)  # (B, F, attention_dim)
        return [self.attention_output(attended.flatten(start_dim=1))]


class AutoIntPlus(AutoInt):
    """AutoInt+: `AutoInt + MLP(flat_embeddings)`, the paper's variant with a deep network.

    Args:
        schema, fm_embed_dim, attention_layers, attention_heads, attention_dim,
        attention_residual: as in `AutoInt`.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = AutoIntPlus(schema, hidden_units=(256, 128))
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        attention_layers: int = 3,
        attention_heads: int = 2,
        attention_dim: int = 16,
        attention_residual: bool = True,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            schema,
            fm_embed_dim,
            attention_layers,
            attention_heads,
            attention_dim,
            attention_residual,
        )
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        return [*super().logit_parts(views), self.mlp(views.flat_embeddings)]
