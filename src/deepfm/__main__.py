"""`python -m deepfm` (or `deepfm`): commands for using trained models.

deepfm score --model models/deepfm --input rows.parquet --output scores.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deepfm.cli import LOG_FORMAT, USER_ERRORS
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
    return commands


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        score_file(args.model, args.input, args.output, args.vocab_dir, args.batch_rows)
    except USER_ERRORS as err:
        logging.getLogger("deepfm").error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
