"""DCN-V2: a cross network of explicit feature crosses beside or below a deep network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.models.base import CTRModel
from deepfm.models.layers.cross import CrossNetwork, CrossNetworkMix
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.mlp import MLP


class DCNv2(CTRModel):
    """DCN-V2 (Wang et al. 2021) over `x_0 = flat_embeddings`.

    - `stacked`: `MLP(Cross(x_0))`.
    - `parallel`: `Linear([Cross(x_0), MLP_hidden(x_0)])`, the MLP without its logit layer.

    `Cross` is `CrossNetwork` (full-rank `W_l`) or, with `low_rank`, `CrossNetworkMix`
    (DCN-Mix: `num_experts` gated low-rank experts per layer). As in the paper there is no
    bias or first-order term (`linear=False`): the cross network's residual already passes
    `x_0` through, so the logit is linear in the raw embeddings plus every cross up to degree
    `cross_layers + 1`, and the model owns no first-order tables or projections.

    Args:
        schema: the input fields.
        fm_embed_dim: unused (no field vectors are read); kept for a uniform constructor.
        cross_layers: cross layers.
        low_rank: None for full-rank cross layers (DCN-V2); a rank `r` for DCN-Mix.
        num_experts: low-rank experts per layer (DCN-Mix only).
        structure: `stacked` or `parallel` combination of the cross network and the MLP.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = DCNv2(schema, cross_layers=3, low_rank=32, num_experts=4, structure="parallel")
        logits = model(batch)  # (B,)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        cross_layers: int = 3,
        low_rank: int | None = None,
        num_experts: int = 4,
        structure: Literal["stacked", "parallel"] = "parallel",
        hidden_units: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(schema, fm_embed_dim, linear=False, field_embeddings=False)
        input_dim = schema.total_embedding_dim
        self.cross: nn.Module = (
            CrossNetwork(input_dim, cross_layers)
            if low_rank is None
            else CrossNetworkMix(input_dim, cross_layers, low_rank, num_experts)
        )
        self.stacked = structure == "stacked"
        self.mlp = MLP(input_dim, hidden_units, dropout, output_logit=self.stacked)
        self.output = None if self.stacked else nn.Linear(input_dim + self.mlp.output_dim, 1)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        crossed = self.cross(views.flat_embeddings)  # (B, d)
        if self.output is None:
            return [self.mlp(crossed)]
        deep = self.mlp(views.flat_embeddings)  # (B, hidden_units[-1])
        return [self.output(torch.cat([crossed, deep], dim=1))]
