"""MovieLensAdapter: one call from a data config to the schema and three datasets."""

from __future__ import annotations

import logging

from deepfm.config import DataConfig, FeatureConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepare import SPLITS, prepare
from deepfm.data.schema import Schema
from deepfm.data.sources import download

logger = logging.getLogger(__name__)


class MovieLensAdapter:
    """Loads a prepared MovieLens release, downloading and preparing it when missing.

    The DVC pipeline runs `download` and `prepare` as stages; the adapter lets a
    notebook or script start from nothing with the same code.

    Args:
        data: which release, where raw and processed files live, label and split.
        feature: feature settings used only when the data must be prepared here.

    Example::

        schema, train_ds, val_ds, test_ds = MovieLensAdapter(DataConfig()).build()
    """

    def __init__(self, data: DataConfig, feature: FeatureConfig | None = None) -> None:
        self.data = data
        self.feature = feature or FeatureConfig()

    def build(self) -> tuple[Schema, CTRDataset, CTRDataset, CTRDataset]:
        processed = self.data.processed_path
        if not (processed / "schema.json").is_file():
            if not self.data.raw_path.is_dir():
                logger.info("no raw data at %s: downloading", self.data.raw_path)
                download(self.data.dataset, self.data.raw_path.parent)
            logger.info("no prepared data at %s: preparing", processed)
            prepare(self.data, self.feature)
        schema = Schema.load(processed / "schema.json")
        train_ds, val_ds, test_ds = (
            CTRDataset.from_parquet(processed / f"{split}.parquet", schema) for split in SPLITS
        )
        return schema, train_ds, val_ds, test_ds
