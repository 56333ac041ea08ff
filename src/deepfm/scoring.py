"""Score a Parquet file of raw feature rows with a trained model, batch by batch.

The output holds every input row, in input order, with the input columns and a
float32 `probability` column; it appears at its path only when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from deepfm import atomic
from deepfm.serving import CTRPredictor, ServingError

logger = logging.getLogger(__name__)

BATCH_ROWS = 65_536


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
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write `input_path`'s rows with their click probabilities to `output_path`.

    Returns the number of rows scored (always all of them; a bad batch is an error).
    """
    predictor = CTRPredictor.from_files(model_dir / "model.pt", vocab_dir)
    parquet = open_input(input_path, predictor.encoder.required_columns)
    rows = parquet.metadata.num_rows
    schema = parquet.schema_arrow.append(pa.field("probability", pa.float32()))
    with (
        atomic.open_for_write(output_path) as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        tqdm(total=rows, unit="rows", desc=f"scoring {input_path.name}") as progress,
    ):
        first_row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows):
            try:
                probabilities = predictor.predict(batch.to_pandas())
            except ServingError as err:
                last_row = first_row + batch.num_rows - 1
                raise ServingError(f"{input_path} rows {first_row}-{last_row}: {err}") from err
            writer.write_batch(batch.append_column("probability", pa.array(probabilities)))
            first_row += batch.num_rows
            progress.update(batch.num_rows)
    logger.info("scored %d rows of %s into %s", rows, input_path, output_path)
    return rows
