"""The `model` section of `params.yaml`: one typed section per model, named as the model.

A model class takes its section whole (`DeepFM(schema, DNNConfig())`), so its knobs and their
defaults are declared once, here. Ranges that depend on two sections are checked on
`deepfm.config.ExperimentConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field, StrictBool
from pydantic.dataclasses import dataclass

from deepfm.config_values import SECTION, Count, Dropout, EmbeddingDim, HiddenWidth

Widths = tuple[HiddenWidth, ...]
NonEmptyWidths = Annotated[Widths, Field(min_length=1)]


@dataclass(frozen=True, config=SECTION)
class FMConfig:
    """Factorization machine: bias + first order + pairwise interactions; no knobs.

    Args:
        (none): the section is empty; `feature.fm_embed_dim` sets the FM width.

    Example::

        model = FM(schema, FMConfig())
    """


@dataclass(frozen=True, config=SECTION)
class DNNConfig:
    """The MLP head on the concatenated field embeddings: all of `model.dnn`,
    `model.deepfm` and `model.wide_deep` (their other parts have no knobs).

    Args:
        hidden_units: MLP hidden widths, in order; empty gives a linear head.
        dropout: dropout probability after each hidden ReLU.

    Example::

        model = DeepFM(schema, DNNConfig(hidden_units=(256, 128), dropout=0.1))
    """

    hidden_units: Widths = (256, 128)
    dropout: Dropout = 0.0


DeepFMConfig = DNNConfig
WideDeepConfig = DNNConfig


@dataclass(frozen=True, config=SECTION)
class XDeepFMConfig(DNNConfig):
    """The MLP head plus a Compressed Interaction Network.

    Args:
        hidden_units, dropout: the MLP head, as in `DNNConfig`.
        cin_layer_sizes: feature maps made by each CIN layer.
        cin_split_half: pass half of each non-final CIN layer on and pool the other half
            (the sizes but the last must then be even).

    Example::

        model = XDeepFM(schema, XDeepFMConfig(cin_layer_sizes=(64, 64, 64)))
    """

    cin_layer_sizes: Annotated[tuple[EmbeddingDim, ...], Field(min_length=1)] = (16, 16)
    cin_split_half: StrictBool = True


@dataclass(frozen=True, config=SECTION)
class SelfAttentionConfig:
    """The self-attention stack that AttentionDeepFM and AutoInt share.

    Args:
        attention_layers: stacked self-attention layers.
        attention_heads: heads per layer; must divide the width the layers produce.
        attention_residual: add each layer's (projected) input to its output.

    Example::

        SelfAttentionConfig(attention_layers=2).attention_heads  # 2
    """

    attention_layers: Count = 3
    attention_heads: Count = 2
    attention_residual: StrictBool = True


@dataclass(frozen=True, config=SECTION)
class AttentionDeepFMConfig(SelfAttentionConfig, DNNConfig):
    """The MLP head plus self-attention layers across fields, at `feature.fm_embed_dim`.

    Args:
        hidden_units, dropout: the MLP head, as in `DNNConfig`.
        attention_layers, attention_heads, attention_residual: as in `SelfAttentionConfig`;
            the heads must divide `feature.fm_embed_dim`.

    Example::

        model = AttentionDeepFM(schema, AttentionDeepFMConfig(attention_layers=2))
    """


@dataclass(frozen=True, config=SECTION)
class DCNv2Config(DNNConfig):
    """The MLP plus a cross network.

    Args:
        hidden_units, dropout: the MLP, as in `DNNConfig`.
        cross_layers: cross layers.
        low_rank: None for full-rank cross layers (DCN-V2); a rank `r` gives DCN-Mix.
        num_experts: low-rank experts per layer (DCN-Mix only).
        structure: `stacked` (MLP over the crosses) or `parallel` (both read the embeddings).

    Example::

        model = DCNv2(schema, DCNv2Config(low_rank=32, structure="stacked"))
    """

    cross_layers: Count = 3
    low_rank: Count | None = None
    num_experts: Count = 4
    structure: Literal["stacked", "parallel"] = "parallel"


@dataclass(frozen=True, config=SECTION)
class FinalMLPConfig:
    """Two gated MLP streams fused by a multi-head bilinear interaction.

    Args:
        stream1_hidden_units: hidden widths of the first stream.
        stream2_hidden_units: hidden widths of the second stream.
        gate_hidden_units: hidden widths of each stream's gate MLP.
        num_heads: fusion heads; must divide both streams' last widths.
        dropout: dropout probability in both streams.

    Example::

        model = FinalMLP(schema, FinalMLPConfig(num_heads=4))
    """

    stream1_hidden_units: NonEmptyWidths = (256, 128)
    stream2_hidden_units: NonEmptyWidths = (256, 128)
    gate_hidden_units: Widths = (64,)
    num_heads: Count = 8
    dropout: Dropout = 0.0


@dataclass(frozen=True, config=SECTION)
class AutoIntConfig(SelfAttentionConfig):
    """Self-attention layers over the fields, then a linear layer: AutoInt as in its paper.

    Args:
        attention_layers, attention_heads, attention_residual: as in `SelfAttentionConfig`;
            the heads must divide `attention_dim`.
        attention_dim: width of each field vector after attention (all heads together).

    Example::

        model = AutoInt(schema, AutoIntConfig(attention_dim=64))  # the paper's 2 heads of 32
    """

    attention_dim: EmbeddingDim = 16


@dataclass(frozen=True, config=SECTION)
class AutoIntPlusConfig(AutoIntConfig):
    """AutoInt plus an MLP over the concatenated field embeddings (AutoInt+).

    Args:
        attention_layers, attention_heads, attention_residual, attention_dim: as in
            `AutoIntConfig`.
        hidden_units: MLP hidden widths.
        dropout: MLP dropout probability.

    Example::

        model = AutoIntPlus(schema, AutoIntPlusConfig(hidden_units=(128,)))
    """

    hidden_units: Widths = (256, 128)
    dropout: Dropout = 0.0


@dataclass(frozen=True, config=SECTION)
class ModelConfig:
    """One section per model; its field names are the model names `train.models` accepts.

    Args:
        fm, dnn, deepfm, xdeepfm, attention_deepfm, wide_deep, dcnv2, finalmlp, autoint,
            autoint_plus: each model's section; `deepfm.models.registry.build_model` passes
            `model.<name>` to the model class of that name.

    Example::

        ModelConfig(deepfm=DNNConfig(dropout=0.1)).deepfm.hidden_units  # (256, 128)
    """

    fm: FMConfig = FMConfig()
    dnn: DNNConfig = DNNConfig()
    deepfm: DeepFMConfig = DeepFMConfig()
    xdeepfm: XDeepFMConfig = XDeepFMConfig()
    attention_deepfm: AttentionDeepFMConfig = AttentionDeepFMConfig()
    wide_deep: WideDeepConfig = WideDeepConfig()
    dcnv2: DCNv2Config = DCNv2Config()
    finalmlp: FinalMLPConfig = FinalMLPConfig()
    autoint: AutoIntConfig = AutoIntConfig()
    autoint_plus: AutoIntPlusConfig = AutoIntPlusConfig()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The model names, in `params.yaml` order."""
        return tuple(f.name for f in dataclasses.fields(cls))
