"""What every DVC stage command shares: `--params`, logging, and clean failure messages."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from deepfm.config import ConfigError, ExperimentConfig, ModelConfig
from deepfm.errors import UserError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Failures a user can fix; their message names the file, key or source at fault.
USER_ERRORS = (UserError, FileNotFoundError)


def run_stage(
    main: Callable[[ExperimentConfig, argparse.Namespace], None],
    parser: argparse.ArgumentParser | None = None,
    argv: list[str] | None = None,
) -> None:
    """Parse `--params` (and the stage's own arguments), configure logging, run `main`.

    A user error ends the process with exit code 1 and one line naming the
    problem instead of a traceback; anything else is a bug and keeps its traceback.
    """
    parser = parser or argparse.ArgumentParser()
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        main(ExperimentConfig.from_yaml(args.params), args)
    except USER_ERRORS as err:
        logging.getLogger("deepfm").error("%s", err)
        sys.exit(1)


def matrix_item(address: str, values: Mapping[str, Sequence[object]]) -> dict[str, object]:
    """The matrix values of DVC stage `address` (DVC's `$DVC_STAGE`), found by name.

    DVC names a matrix stage `<stage>@<value>-<value>...` (`train@deepfm-42`), one value per
    matrix key in order; `values` gives each key's allowed values (from params). The address is
    compared with every combination's name, never parsed or passed to a shell.

    Example::

        matrix_item("train@deepfm-42", {"model": ["fm", "deepfm"], "seed": [42, 43]})
        # {"model": "deepfm", "seed": 42}
    """
    name = address.rsplit(":", 1)[-1]  # "dvc.yaml:train@deepfm-42" outside the root dvc.yaml
    stage = name.split("@", 1)[0]
    for combination in itertools.product(*values.values()):
        if name == f"{stage}@" + "-".join(str(value) for value in combination):
            return dict(zip(values, combination, strict=True))
    pattern = "-".join(f"<{key}>" for key in values)
    raise ConfigError(f"DVC stage {name!r} is not {stage}@{pattern} for the params' values")


def check_model_name(name: str) -> None:
    """A `ConfigError` listing the models unless `name` is one."""
    if name not in ModelConfig.names():
        valid = list(ModelConfig.names())
        raise ConfigError(f"--model {name!r} is not a model; choose from {valid}")
