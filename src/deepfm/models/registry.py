"""Model names, as `params.yaml` spells them, to model classes; and building one from config."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from deepfm import atomic
from deepfm.config import ExperimentConfig
from deepfm.data.schema import Schema
from deepfm.errors import UserError
from deepfm.models.attention_deepfm import AttentionDeepFM
from deepfm.models.autoint import AutoInt, AutoIntPlus
from deepfm.models.base import CTRModel
from deepfm.models.dcnv2 import DCNv2
from deepfm.models.deepfm import DeepFM
from deepfm.models.dnn import DNN
from deepfm.models.finalmlp import FinalMLP
from deepfm.models.fm import FM
from deepfm.models.wide_deep import WideDeep
from deepfm.models.xdeepfm import XDeepFM

MODELS: dict[str, type[CTRModel]] = {
    "fm": FM,
    "dnn": DNN,
    "deepfm": DeepFM,
    "xdeepfm": XDeepFM,
    "attention_deepfm": AttentionDeepFM,
    "wide_deep": WideDeep,
    "dcnv2": DCNv2,
    "finalmlp": FinalMLP,
    "autoint": AutoInt,
    "autoint_plus": AutoIntPlus,
}


def build_model(name: str, schema: Schema, config: ExperimentConfig) -> nn.Module:
    """Build model `name` for `schema` with its `model.<name>` section of `config`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")
    section = getattr(config.model, name)
    return MODELS[name](schema, section, fm_embed_dim=config.feature.fm_embed_dim)


class ModelFileError(UserError, ValueError):
    """A model file that cannot be loaded safely; the message names it.

    Example::

        raise ModelFileError(f"{path}: not a complete model file (EOF)")
    """


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """What `models/<name>/model.pt` holds, rebuilt: the model and what it was built from.

    Args:
        name: the model name (`params.yaml`'s spelling).
        model: the rebuilt model, in eval mode.
        schema, config: what it was built from.
        seed: the training seed (`train --seed`).
        data_fingerprint: of the prepared data it was trained on.

    Example::

        saved = load_model(Path("models/deepfm/seed-42/model.pt"))
        logits = saved.model(batch)
    """

    name: str
    model: nn.Module
    schema: Schema
    config: ExperimentConfig
    seed: int | None = None
    data_fingerprint: str = ""


def save_model(
    path: Path,
    name: str,
    model: nn.Module,
    schema: Schema,
    config: ExperimentConfig,
    seed: int | None = None,
    data_fingerprint: str = "",
) -> None:
    """Write state dict, schema, config, training seed and prepared-data fingerprint
    atomically; `torch.load(weights_only=True)` reads it."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    payload = {
        "model": name,
        "state_dict": state,
        "schema": schema.to_dict(),
        "config": config.to_dict(),
        "seed": seed,
        "data_fingerprint": data_fingerprint,
    }
    with atomic.open_for_write(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: Path) -> SavedModel:
    """Rebuild a saved model from its file alone (no pickled code is executed).

    A file whose pickle holds anything but tensors and plain data (code to run on
    load, say) is refused, as is a file that is not a whole `torch.save` archive:
    both raise `ModelFileError` naming the file.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        holds = f"a reference to {found.group(1)}" if found else "objects of other kinds"
        raise ModelFileError(
            f"{path}: refused to load: its pickle holds {holds}; a model file written by "
            "`train` holds only tensors and plain data"
        ) from None
    except (RuntimeError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelFileError(f"{path}: not a complete model file ({reason})") from None
    schema = Schema.from_dict(saved["schema"])
    config = ExperimentConfig.from_dict(saved["config"])
    model = build_model(saved["model"], schema, config)
    model.load_state_dict(saved["state_dict"])
    return SavedModel(
        saved["model"],
        model.eval(),
        schema,
        config,
        saved.get("seed"),
        saved.get("data_fingerprint", ""),
    )
