"""FinalMLP: two gated MLP streams fused by a multi-head bilinear interaction."""

from __future__ import annotations

from torch import Tensor

from deepfm.data.schema import Schema
from deepfm.model_config import FinalMLPConfig
from deepfm.models.base import CTRModel
from deepfm.models.layers.bilinear_fusion import MultiHeadBilinearFusion
from deepfm.models.layers.embedding import EmbeddingViews
from deepfm.models.layers.feature_gate import FeatureGate
from deepfm.models.layers.mlp import MLP


class FinalMLP(CTRModel):
    """`Fusion(MLP_1(Gate_1(e) * e), MLP_2(Gate_2(e) * e))` with `e = flat_embeddings`.

    FinalMLP (Mao et al. 2023). Each stream `k` first re-weights the flat embeddings by its own
    gate `2 * sigmoid(GateMLP_k(e))` (`FeatureGate`), then runs its ReLU MLP without a logit
    layer; `MultiHeadBilinearFusion` turns the two outputs into one logit. The gates' context
    is the row's own flat embeddings, the paper's "all features as context" choice: its other
    option, a learned context vector, gives every row the same gate, a fixed per-entry scale
    that the stream's first layer could absorb. As in the paper there is no bias or
    first-order term, and the model owns no first-order tables or projections.

    Args:
        schema: the input fields.
        config: `model.finalmlp`, the streams, their gates and the fusion heads.
        fm_embed_dim: unused (no field vectors are read); kept for a uniform constructor.

    Example::

        # Streams of different depths; the 8 fusion heads divide both last widths.
        config = FinalMLPConfig(stream1_hidden_units=(400, 400), stream2_hidden_units=(800,))
        logits = FinalMLP(schema, config)(batch)  # (B,)
    """

    linear = False
    reads_field_embeddings = False

    def __init__(self, schema: Schema, config: FinalMLPConfig, fm_embed_dim: int = 16) -> None:
        super().__init__(schema, fm_embed_dim)
        input_dim = schema.total_embedding_dim
        gate_units, dropout = config.gate_hidden_units, config.dropout
        self.gate1 = FeatureGate(input_dim, input_dim, gate_units)
        self.gate2 = FeatureGate(input_dim, input_dim, gate_units)
        self.stream1 = MLP(input_dim, config.stream1_hidden_units, dropout, output_logit=False)
        self.stream2 = MLP(input_dim, config.stream2_hidden_units, dropout, output_logit=False)
        self.fusion = MultiHeadBilinearFusion(
            self.stream1.output_dim, self.stream2.output_dim, config.num_heads
        )

    def logit_parts(self, views: EmbeddingViews) -> list[Tensor]:
        flat = views.flat_embeddings  # (B, d)
        stream1 = self.stream1(self.gate1(flat, context=flat))  # (B, stream1_hidden_units[-1])
        stream2 = self.stream2(self.gate2(flat, context=flat))  # (B, stream2_hidden_units[-1])
        return [self.fusion(stream1, stream2)]
