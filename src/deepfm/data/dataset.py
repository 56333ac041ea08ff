"""CTRDataset: a prepared split held as whole-column tensors.

Training takes batches by index (`dataset.batch(indices)`), one gather per
column; `DataLoader(dataset)` also works, row by row, for exploration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from deepfm.data.schema import FeatureType, FieldSpec, PreparedDataError, Schema

Batch = dict[str, torch.Tensor]


class CTRDataset(Dataset):
    """Field columns (int32: (N,) sparse, (N, max_len) sequence) and float32 labels (N,).

    Args:
        columns: one tensor per schema field, all with N rows.
        labels: 0/1 labels, (N,).

    Example::

        ds = CTRDataset.from_parquet("data/processed/ml-100k/train.parquet", schema)
        features, labels = ds.batch(torch.arange(1024))
    """

    def __init__(self, columns: Batch, labels: torch.Tensor) -> None:
        rows = {len(column) for column in columns.values()} | {len(labels)}
        if len(rows) != 1:
            raise ValueError(f"columns and labels differ in length: {sorted(rows)}")
        self.columns = columns
        self.labels = labels

    @classmethod
    def from_parquet(cls, path: str | Path, schema: Schema) -> CTRDataset:
        """Read a prepared split; columns stay int32, as on disk.

        A file that is unreadable, empty, or holds indices outside the schema's
        vocabularies (another prepare run's schema) is a `PreparedDataError`.
        """
        path = Path(path)
        table = _read_split(path, [*schema.fields, schema.label])
        columns = {}
        for name, spec in schema.fields.items():
            values = _field_indices(path, table.column(name).combine_chunks(), spec)
            columns[name] = torch.from_numpy(np.array(values, dtype=np.int32))  # writable copy
        labels = _to_numpy(table.column(schema.label)).astype(np.float32)
        if not np.isin(labels, (0, 1)).all():
            raise PreparedDataError(f"{path}: column {schema.label!r} must hold only 0 and 1")
        return cls(columns, torch.from_numpy(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> tuple[Batch, torch.Tensor]:
        return {name: column[row].long() for name, column in self.columns.items()}, self.labels[row]

    def batch(self, indices: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """Rows `indices` of every column at once (one index_select per column)."""
        features = {name: column.index_select(0, indices) for name, column in self.columns.items()}
        return features, self.labels.index_select(0, indices)

    def to(self, device: torch.device | str) -> CTRDataset:
        """A copy with every column on `device` (the whole split lives there)."""
        columns = {name: column.to(device) for name, column in self.columns.items()}
        return CTRDataset(columns, self.labels.to(device))


def _read_split(path: Path, columns: list[str]) -> pa.Table:
    """`columns` of the split file at `path`, which must be readable and have rows."""
    try:
        parquet = pq.ParquetFile(path)
        missing = [name for name in columns if name not in parquet.schema_arrow.names]
        if missing:
            raise PreparedDataError(f"{path}: missing column(s) {missing}")
        table = parquet.read(columns=columns)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())
        raise PreparedDataError(f"{path}: not a readable Parquet file ({reason})") from None
    if table.num_rows == 0:
        raise PreparedDataError(f"{path}: 0 rows; the {path.stem} split must not be empty")
    return table


def _field_indices(path: Path, column: pa.Array, spec: FieldSpec) -> np.ndarray:
    """The column's indices as numpy, `(N,)` or `(N, max_len)`, each in 0..vocabulary_size-1."""
    where = f"{path}: column {spec.name!r}"
    if spec.feature_type is FeatureType.SEQUENCE:
        kind = column.type
        fixed = pa.types.is_fixed_size_list(kind) and kind.list_size == spec.max_len
        if not fixed or column.null_count:
            raise PreparedDataError(f"{where} must hold lists of {spec.max_len} indices")
        column = column.flatten()
    if not pa.types.is_integer(column.type) or column.null_count:
        raise PreparedDataError(f"{where} must hold integer indices, not {column.type} or nulls")
    values = column.to_numpy()
    if len(values) and (values.min() < 0 or values.max() >= spec.vocabulary_size):
        bad = values.min() if values.min() < 0 else values.max()
        raise PreparedDataError(
            f"{where} holds index {bad} but the schema's vocabulary_size for {spec.name!r} is "
            f"{spec.vocabulary_size} (indices 0-{spec.vocabulary_size - 1}): the schema and the "
            "data are not from the same prepare run"
        )
    return values.reshape(-1, spec.max_len) if spec.feature_type is FeatureType.SEQUENCE else values


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.combine_chunks().to_numpy(zero_copy_only=False)
