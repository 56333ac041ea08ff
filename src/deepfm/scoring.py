"""Score a Parquet file of raw feature rows with a trained model, batch by batch.

The output holds every input row, in input order, with the input columns and a
float32 `probability` column (replacing one the input already has); it appears at its
path only when complete, and a failure to write it (a full disk, say) leaves nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from deepfm import atomic
from deepfm.predict import PREDICT_BATCH_SIZE
from deepfm.serving import CTRPredictor, ServingError

logger = logging.getLogger(__name__)

PROBABILITY = "probability"


def open_input(path: Path, required: tuple[str, ...]) -> pq.ParquetFile:
    """Open `path` as Parquet and check it has every required column."""
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as err:
        raise ServingError(f"{path}: not a readable Parquet file ({err})") from err
    missing = [column for column in required if column not in parquet.schema_arrow.names]
    if missing:
        raise ServingError(
            f"{path}: missing required column(s) {missing}; every row needs {list(required)}"
        )
    return parquet


def score_file(
    model_dir: Path,
    input_path: Path,
    output_path: Path,
    vocab_dir: Path | None = None,
    batch_rows: int = PREDICT_BATCH_SIZE,
) -> int:
    """Write `input_path`'s rows with their click probabilities to `output_path`.

    An input that already has a `probability` column (a scored file) gets it replaced.
    Returns the number of rows scored (always all of them; a bad batch is an error).
    """
    if batch_rows < 1:
        raise ServingError(f"--batch-rows must be a whole number of rows >= 1, got {batch_rows}")
    if output_path.is_dir():
        raise ServingError(f"{output_path}: is a folder; --output takes a Parquet file's path")
    predictor = CTRPredictor.from_files(model_dir / "model.pt", vocab_dir)
    parquet = open_input(input_path, predictor.encoder.required_columns)
    rows = parquet.metadata.num_rows
    schema = parquet.schema_arrow
    if PROBABILITY in schema.names:
        logger.warning(
            "%s already has a %r column (a scored file?): the output has this model's "
            "probabilities in its place",
            input_path,
            PROBABILITY,
        )
        schema = schema.remove(schema.get_field_index(PROBABILITY))
    schema = schema.append(pa.field(PROBABILITY, pa.float32()))
    batches = scored_batches(predictor, parquet, input_path, batch_rows)
    try:
        with (
            atomic.open_for_write(output_path) as tmp,
            pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
            tqdm(total=rows, unit="rows", desc=f"scoring {input_path.name}") as progress,
        ):
            for batch in batches:
                writer.write_batch(batch)
                progress.update(batch.num_rows)
    except OSError as err:  # reading the input raises ServingError (see scored_batches)
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise ServingError(f"{output_path}: cannot write the output ({reason})") from err
    logger.info("scored %d rows of %s into %s", rows, input_path, output_path)
    return rows


def scored_batches(
    predictor: CTRPredictor, parquet: pq.ParquetFile, input_path: Path, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The input's batches with their `probability` column (any old one dropped).

    Every failure to read or score the input is a `ServingError` naming its rows.
    """
    batches = parquet.iter_batches(batch_size=batch_rows)
    first_row = 0
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:
            raise ServingError(f"{input_path}: not a readable Parquet file ({err})") from err
        if batch is None:
            return
        if PROBABILITY in batch.schema.names:
            batch = batch.drop_columns([PROBABILITY])
        try:
            probabilities = predictor.predict(batch.to_pandas())
        except ServingError as err:
            last_row = first_row + batch.num_rows - 1
            raise ServingError(f"{input_path} rows {first_row}-{last_row}: {err}") from err
        yield batch.append_column(PROBABILITY, pa.array(probabilities))
        first_row += batch.num_rows
