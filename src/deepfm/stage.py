"""What every DVC stage command shares: `--params`, logging, and clean failure messages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from deepfm.config import ExperimentConfig
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
