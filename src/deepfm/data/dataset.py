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

from deepfm.data.schema import FeatureType, Schema

Batch = dict[str, torch.Tensor]


class CTRDataset(Dataset):
    """Field columns (int32: (N,) sparse, (N, max_len) sequence) and float32 labels (N,).

    Args:
        columns: one tensor per schema field, all with N rows.
        labels: 0/1 labels, (N,).

    Example:
        >>> ds = CTRDataset.from_parquet("data/processed/ml-100k/train.parquet", schema)
        >>> features, labels = ds.batch(torch.arange(1024))
    """

    def __init__(self, columns: Batch, labels: torch.Tensor) -> None:
        rows = {len(column) for column in columns.values()} | {len(labels)}
        if len(rows) != 1:
            raise ValueError(f"columns and labels differ in length: {sorted(rows)}")
        self.columns = columns
        self.labels = labels

    @classmethod
    def from_parquet(cls, path: str | Path, schema: Schema) -> CTRDataset:
        """Read a prepared split; columns stay int32, as on disk."""
        table = pq.read_table(path, columns=[*schema.fields, schema.label])
        columns = {}
        for name, spec in schema.fields.items():
            column = table.column(name).combine_chunks()
            if spec.feature_type is FeatureType.SEQUENCE:
                values = column.flatten().to_numpy().reshape(-1, spec.max_len)
            else:
                values = column.to_numpy()
            columns[name] = torch.from_numpy(np.array(values, dtype=np.int32))  # writable copy
        labels = _to_numpy(table.column(schema.label)).astype(np.float32)
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


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.combine_chunks().to_numpy(zero_copy_only=False)
