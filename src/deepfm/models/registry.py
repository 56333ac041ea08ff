"""Model names, as `params.yaml` spells them, to model classes; and building one from config."""

from __future__ import annotations

import dataclasses

from torch import nn

from deepfm.config import ExperimentConfig
from deepfm.data.schema import Schema
from deepfm.models.attention_deepfm import AttentionDeepFM
from deepfm.models.deepfm import DeepFM
from deepfm.models.dnn import DNN
from deepfm.models.fm import FM
from deepfm.models.xdeepfm import XDeepFM

MODELS: dict[str, type[nn.Module]] = {
    "fm": FM,
    "dnn": DNN,
    "deepfm": DeepFM,
    "xdeepfm": XDeepFM,
    "attention_deepfm": AttentionDeepFM,
}


def build_model(name: str, schema: Schema, config: ExperimentConfig) -> nn.Module:
    """Build model `name` for `schema` with its `model.<name>` section of `config`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")
    section = getattr(config.model, name)
    options = {field.name: getattr(section, field.name) for field in dataclasses.fields(section)}
    return MODELS[name](schema, fm_embed_dim=config.feature.fm_embed_dim, **options)
