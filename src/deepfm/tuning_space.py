"""A `tune.space` as Optuna sees it: a distribution per params key, and back to real values.

Optuna's categorical choices must be None, booleans, numbers or strings; a `Choice` with
any other choice (hidden-unit lists) is searched over the choices' JSON texts
(`"[400, 400, 400]"`), and `decode_params` turns a trial's params back into the values
`ExperimentConfig.with_overrides` takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from deepfm.config import ExperimentConfig
from deepfm.tune_config import Choice, Distribution, FloatRange


def search_distributions(space: Mapping[str, Distribution]) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each key of `space` (a `tune.space.<model>`)."""
    distributions: dict[str, BaseDistribution] = {}
    for key, distribution in space.items():
        if isinstance(distribution, Choice):
            choices = distribution.choices
            if _encoded(distribution):
                choices = tuple(json.dumps(choice) for choice in choices)
            distributions[key] = CategoricalDistribution(choices)
        elif isinstance(distribution, FloatRange):
            distributions[key] = FloatDistribution(
                distribution.low, distribution.high, log=distribution.log
            )
        else:
            distributions[key] = IntDistribution(
                distribution.low, distribution.high, log=distribution.log, step=distribution.step
            )
    return distributions


def decode_params(space: Mapping[str, Distribution], params: Mapping[str, Any]) -> dict[str, Any]:
    """The params keys and real values that a trial's Optuna `params` stand for, in the
    order of `space`: `{"model.deepfm.hidden_units": "[128, 64]"}` gives `[128, 64]`."""
    values = {}
    for key, distribution in space.items():
        value = params[key]
        if isinstance(distribution, Choice) and _encoded(distribution):
            value = json.loads(value)
        values[key] = value
    return values


def default_params(space: Mapping[str, Distribution], config: ExperimentConfig) -> dict[str, Any]:
    """The trial that stands for `config`'s own settings, as Optuna params: each key's value
    in `config`, clipped into its range (a 0.0 L2 becomes the range's low end); a key whose
    value is not among its choices is left to the sampler."""
    current = config.flat()
    params: dict[str, Any] = {}
    for key, distribution in space.items():
        value = current[key]
        if isinstance(distribution, Choice):
            choices = [list(c) if isinstance(c, tuple) else c for c in distribution.choices]
            value = list(value) if isinstance(value, tuple) else value
            if value in choices:
                params[key] = json.dumps(value) if _encoded(distribution) else value
        else:
            params[key] = min(max(value, distribution.low), distribution.high)
    return params


def _encoded(choice: Choice) -> bool:
    """Whether Optuna sees `choice` as JSON texts: not every choice is a plain value."""
    return not all(
        value is None or isinstance(value, bool | int | float | str) for value in choice.choices
    )
