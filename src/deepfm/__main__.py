"""`python -m deepfm` (or `deepfm`): commands for using and tuning models.

deepfm score --model models/deepfm --input rows.parquet --output scores.parquet
deepfm tune --model deepfm [--trials 40] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from deepfm.cli import LOG_FORMAT, USER_ERRORS
from deepfm.config import ExperimentConfig
from deepfm.predict import PREDICT_BATCH_SIZE
from deepfm.scoring import score_file


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(prog="deepfm", description=__doc__.splitlines()[0])
    subcommands = commands.add_subparsers(dest="command", required=True)
    score = subcommands.add_parser(
        "score",
        help="click probabilities for a Parquet file of raw feature rows",
        description="Score every row of a Parquet file of raw features (user_id, movie_id, "
        "gender, age, occupation, zip_code, genres); unseen values count as OOV.",
    )
    score.add_argument("--model", type=Path, required=True, help="a folder with model.pt")
    score.add_argument("--input", type=Path, required=True, help="Parquet file of raw rows")
    score.add_argument("--output", type=Path, required=True, help="Parquet file to write")
    score.add_argument(
        "--vocab-dir",
        type=Path,
        help="vocabularies (default: the prepared data the model was trained on)",
    )
    score.add_argument("--batch-rows", type=int, default=PREDICT_BATCH_SIZE, help="rows per batch")
    tune = subcommands.add_parser(
        "tune",
        help="search a model's hyperparameters (Optuna, on validation AUC)",
        description="Run the Optuna study of one model over its tune.space (params.yaml) "
        "until it has --trials finished trials; a stopped study resumes where it was. Writes "
        "reports/tuning/<model>.yaml (the best settings), its trials CSV and figures, and "
        "records the study in MLflow.",
    )
    tune.add_argument("--model", required=True, help="a model with a tune.space section")
    tune.add_argument("--trials", type=int, help="finished trials to reach (default: tune.trials)")
    tune.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return commands


class SignalStop(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a study's MLflow runs end KILLED.

    Args:
        signum: the signal's number.

    Example::

        signal.signal(signal.SIGTERM, stop_on_signal)
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SignalStop(signum)


def run_tune(args: argparse.Namespace) -> None:
    """`deepfm tune`: stopped by Ctrl-C or SIGTERM, one line and exit 128 + the signal."""
    import optuna  # here: `score` need not load Optuna

    from deepfm.tuning import tune

    optuna.logging.disable_default_handler()  # Optuna's lines go through `logging` too
    optuna.logging.enable_propagation()
    config = ExperimentConfig.from_yaml(args.params)
    trials = config.tune.trials if args.trials is None else args.trials
    command = f"deepfm tune --model {args.model} --trials {trials} --params {args.params}"
    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        tune(config, args.model, trials, command)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, SignalStop) else signal.SIGINT
        logging.getLogger("deepfm").error(
            "tune stopped by %s: the running trial is FAIL, its MLflow run KILLED; rerun "
            "the same command to resume the study",
            signal.Signals(signum).name,
        )
        sys.exit(128 + signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        if args.command == "tune":
            run_tune(args)
        else:
            score_file(args.model, args.input, args.output, args.vocab_dir, args.batch_rows)
    except USER_ERRORS as err:
        logging.getLogger("deepfm").error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
