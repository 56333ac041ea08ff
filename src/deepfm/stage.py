"""What every DVC stage command shares: `--params`, logging, and clean failure messages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from deepfm.config import ExperimentConfig

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StageError(Exception):
    """A failure whose message is the whole story: shown without a traceback."""


def run_stage(
    main: Callable[[ExperimentConfig, argparse.Namespace], None],
    parser: argparse.ArgumentParser | None = None,
    argv: list[str] | None = None,
) -> None:
    """Parse `--params` (and the stage's own arguments), configure logging, run `main`.

    Errors a user can fix (bad params, bad data, no source) end the process with
    exit code 1 and one line naming the problem, not a traceback.
    """
    parser = parser or argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        main(ExperimentConfig.from_yaml(args.params), args)
    except (StageError, ValueError, FileNotFoundError) as err:
        logging.getLogger("deepfm").error("%s", err)
        sys.exit(1)
