"""Plain deep network over the concatenated raw field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.layers.mlp import MLP


class DNN(nn.Module):
    """`MLP(flat_embeddings)`: no first-order term and no explicit interactions.

    It reads only the raw embeddings, so its `FeatureEmbedding` holds only the per-field
    tables (`flat_only`): no first-order tables or projections it would never train.

    Args:
        schema: the input fields.
        fm_embed_dim: unused (DNN has no field vectors); kept for a uniform constructor.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Shapes:
        - input: `batch`, field name -> index tensor, as `FeatureEmbedding` takes it.
        - output: logits `(B,)`.

    Example::

        model = DNN(schema, hidden_units=(256, 128))
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim, flat_only=True)
        self.mlp = MLP(schema.total_embedding_dim, hidden_units, dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        flat_embeddings = self.embedding.flat_embeddings(batch)  # (B, total_dim)
        return self.mlp(flat_embeddings).squeeze(1)
