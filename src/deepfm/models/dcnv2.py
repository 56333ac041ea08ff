"""DCN-V2: a cross network of explicit feature crosses beside or below a deep network."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfm.data.schema import Schema
from deepfm.model_config import DCNv2Config
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
        config: `model.dcnv2`, the cross network, the MLP and how they combine.
        fm_embed_dim: unused (no field vectors are read); kept for a uniform constructor.

    Example::

        dcn_v2 = DCNv2(schema, DCNv2Config(cross_layers=3, structure="stacked"))
        dcn_mix = DCNv2(schema, DCNv2Config(low_rank=32, num_experts=4))  # parallel
        logits = dcn_mix(batch)  # (B,)
    """

    linear = False
    reads_field_embeddings = False

    def __init__(self, schema: Schema, config: DCNv2Config, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        input_dim = schema.total_embedding_dim
        self.cross: nn.Module = (
            CrossNetwork(input_dim, config.cross_layers)
            if config.low_rank is None
            else CrossNetworkMix(
                input_dim, config.cross_layers, config.low_rank, config.num_experts
            )
        )
        self.stacked = config.structure == "stacked"
        self.mlp = MLP(input_dim, config.hidden_units, config.dropout, output_logit=self.stacked)
        self.output = None if self.stacked else nn.Linear(input_dim + self.mlp.output_dim, 1)

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        crossed = self.cross(views.flat_embeddings)  # (B, d)
        if self.output is None:
            return [self.mlp(crossed)]
        deep = self.mlp(views.flat_embeddings)  # (B, hidden_units[-1])
        return [self.output(torch.cat([crossed, deep], dim=1))]
