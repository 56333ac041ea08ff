"""The `tune` section of `params.yaml`: which models have a tuning study, its budget, and
each model's search space.

A search space maps a dotted `params.yaml` key (`train.lr`, `model.deepfm.dropout`) to a
distribution: a float range, an integer range or a list of choices. `ExperimentConfig`
checks that every key is one a trial may change and that both ends of every range and every
choice make a valid configuration, so a bad space fails before the first trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from deepfm import atomic
from deepfm.config_values import SECTION, Count, Distinct, Seed
from deepfm.params_file import read_params_file

# Settings a trial may change besides its own model's section (`model.<name>.<key>`).
# Per-field embedding widths are fixed by `prepare` (the schema); `feature.fm_embed_dim`,
# the common width the interactions read, is a training-time setting.
TUNABLE_KEYS = (
    "train.lr",
    "train.weight_decay",
    "train.embedding_l2",
    "train.batch_size",
    "feature.fm_embed_dim",
)


@dataclass(frozen=True, config=SECTION)
class FloatRange:
    """A float drawn from [low, high], on a log scale if `log`.

    Args:
        low, high: the range's ends (low < high; low > 0 on a log scale).
        log: draw uniformly in log space (learning rates, L2 strengths).

    Example::

        FloatRange(low=1e-4, high=1e-2, log=True)  # train.lr
    """

    low: StrictFloat
    high: StrictFloat
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 on a log scale, got {self.low}")
        return self


@dataclass(frozen=True, config=SECTION)
class IntRange:
    """An integer drawn from [low, high] in steps of `step`, on a log scale if `log`.

    Args:
        low, high: the range's ends, both included (low < high).
        step: the spacing of the values drawn.
        log: draw uniformly in log space (needs low > 0 and step 1).

    Example::

        IntRange(low=1, high=4)  # model.dcnv2.cross_layers
    """

    low: StrictInt
    high: StrictInt
    step: Count = 1
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log scale needs low > 0 and step 1")
        return self


@dataclass(frozen=True, config=SECTION)
class Choice:
    """One of `choices` (numbers, strings, or lists such as hidden units).

    Args:
        choices: the values a trial picks from.

    Example::

        Choice(choices=([256, 128], [400, 400, 400]))  # model.deepfm.hidden_units
    """

    choices: Annotated[tuple[Any, ...], Field(min_length=1)]


FORMS = "{low, high, log} (floats), {low, high, step, log} (integers) or {choices}"


def _distribution(value: Any) -> FloatRange | IntRange | Choice:
    """The distribution a mapping describes; integer ends make an integer range."""
    if isinstance(value, FloatRange | IntRange | Choice):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping: {FORMS}, got {value!r}")
    ends = (value.get("low"), value.get("high"))
    integers = all(isinstance(end, int) and not isinstance(end, bool) for end in ends)
    kind = Choice if "choices" in value else IntRange if integers else FloatRange
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        why = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"must be {FORMS}: {where + ' ' if where else ''}{why}") from None


Distribution = Annotated[FloatRange | IntRange | Choice, BeforeValidator(_distribution)]


def endpoints(distribution: Distribution) -> tuple[Any, ...]:
    """The values that bound a distribution: both ends of a range, or every choice."""
    if isinstance(distribution, Choice):
        return distribution.choices
    return (distribution.low, distribution.high)


@dataclass(frozen=True, config=SECTION)
class TuneConfig:
    """How `deepfm tune` searches, and which tuned models the pipeline trains.

    Args:
        models: models whose tuned configuration (`reports/tuning/<model>.yaml`, written by
            `deepfm tune`) the pipeline trains on `train.seeds` as leaderboard rows
            `<model>_tuned`.
        trials: trials per study (`deepfm tune --trials` overrides it).
        sampler_seed: the TPE sampler's seed: the same seed proposes the same trials.
        seed: the training seed of every trial.
        warmup_epochs: epochs every trial trains before it may be pruned.
        space: per model, a dotted params key -> its distribution. Keys: `model.<model>.*`
            and those in `TUNABLE_KEYS`.

    Example::

        TuneConfig(space={"fm": {"train.lr": FloatRange(low=1e-4, high=1e-2, log=True)}})
    """

    models: Annotated[tuple[StrictStr, ...], Distinct] = ("deepfm", "fm", "dcnv2")
    trials: Count = 40
    sampler_seed: Seed = 42
    seed: Seed = 42
    warmup_epochs: Count = 4
    space: dict[StrictStr, dict[StrictStr, Distribution]] = dataclasses.field(
        default_factory=lambda: {"deepfm": DEEPFM_SPACE, "fm": FM_SPACE, "dcnv2": DCNV2_SPACE}
    )


def check_key(model: str, key: str) -> None:
    """A `ValueError` unless a trial of `model` may change params key `key`."""
    if key in TUNABLE_KEYS or key.startswith(f"model.{model}."):
        return
    raise ValueError(
        f"tune.space.{model} cannot change {key!r}; it may change model.{model}.* and "
        f"{', '.join(TUNABLE_KEYS)}"
    )


DEEPFM_SPACE: dict[str, Distribution] = {
    "train.lr": FloatRange(low=2e-4, high=5e-3, log=True),
    "train.embedding_l2": FloatRange(low=1e-9, high=1e-3, log=True),
    "train.weight_decay": FloatRange(low=1e-9, high=1e-4, log=True),
    "train.batch_size": Choice(choices=(512, 1024, 2048)),
    "feature.fm_embed_dim": Choice(choices=(8, 16, 32)),
    "model.deepfm.hidden_units": Choice(choices=([128, 64], [256, 128], [400, 400, 400])),
    "model.deepfm.dropout": FloatRange(low=0.0, high=0.5),
}

FM_SPACE: dict[str, Distribution] = {
    "train.lr": FloatRange(low=2e-4, high=5e-2, log=True),
    "train.embedding_l2": FloatRange(low=1e-9, high=1e-3, log=True),
    "train.batch_size": Choice(choices=(256, 512, 1024, 2048)),
    "feature.fm_embed_dim": Choice(choices=(2, 4, 8, 16, 32)),
}

DCNV2_SPACE: dict[str, Distribution] = {
    "train.lr": FloatRange(low=2e-4, high=5e-3, log=True),
    "train.embedding_l2": FloatRange(low=1e-9, high=1e-3, log=True),
    "train.weight_decay": FloatRange(low=1e-9, high=1e-4, log=True),
    "train.batch_size": Choice(choices=(512, 1024, 2048)),
    "model.dcnv2.cross_layers": IntRange(low=1, high=4),
    "model.dcnv2.structure": Choice(choices=("parallel", "stacked")),
    "model.dcnv2.hidden_units": Choice(choices=([128, 64], [256, 128], [400, 400, 400])),
    "model.dcnv2.dropout": FloatRange(low=0.0, high=0.5),
}


TUNED_SUFFIX = "_tuned"


def tuned_row(model: str) -> str:
    """The name of `model`'s tuned configuration on the leaderboard and under `models/`."""
    return model + TUNED_SUFFIX


def tuned_params_path(model: str) -> Path:
    """`reports/tuning/<model>.yaml`: the best trial's settings, a params file."""
    return Path("reports") / "tuning" / f"{model}.yaml"


def write_tuned_params(path: Path, overrides: Mapping[str, Any], header: str) -> None:
    """Write dotted-key settings as a nested params file (comment lines `header` first),
    atomically: `{"train.lr": 3e-3}` becomes `train: {lr: 0.003}`."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *sections, last = key.split(".")
        section = nested
        for name in sections:
            section = section.setdefault(name, {})
        section[last] = list(value) if isinstance(value, tuple) else value
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=None)
    atomic.write_text(path, comments + body)


def read_tuned_params(path: Path) -> dict[str, Any]:
    """The dotted-key settings of a tuned params file (`write_tuned_params`'s output)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", read_params_file(path))
    return flat
