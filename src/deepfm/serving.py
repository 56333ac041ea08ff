"""Serving on raw features: encode them as `prepare` did, then score with a trained model.

`CTRPredictor` takes a DataFrame of raw columns (`RAW_COLUMNS`) and returns click
probabilities; `deepfm.tracking.CTRPyfunc` wraps it as the MLflow model of each run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from deepfm.data.dataset import Batch
from deepfm.data.features import Vocabulary, age_bucket, encode_lists, zip_prefix
from deepfm.data.schema import Schema
from deepfm.models.registry import load_model

RAW_COLUMNS = ("user_id", "movie_id", "gender", "age", "occupation", "zip_code", "genres")
PREDICT_BATCH_SIZE = 65_536
# What this module needs at serving time besides mlflow and the deepfm package itself.
SERVING_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "pyyaml", "cloudpickle")


class RawFeatureEncoder:
    """Raw columns -> the index tensors a model takes, with the prepare-time transforms.

    Values not in a field's vocabulary, and missing values, map to 0 (OOV); rows are
    never dropped.

    Args:
        schema: the model's fields (their order and `genres.max_len`).
        vocabs: one fitted vocabulary per schema field.
        zip_prefix_len: characters of the zip code kept, as in `feature.zip_prefix_len`.

    Example::

        encoder = RawFeatureEncoder(schema, vocabs, zip_prefix_len=3)
        batch = encoder.encode(frame)  # {"user_id": (B,) int64, ..., "genres": (B, 6) int64}
    """

    def __init__(self, schema: Schema, vocabs: dict[str, Vocabulary], zip_prefix_len: int) -> None:
        missing = [name for name in schema.fields if name not in vocabs]
        if missing:
            raise ValueError(f"no vocabulary for schema field(s) {missing}")
        self.schema = schema
        self.vocabs = vocabs
        self.zip_prefix_len = zip_prefix_len

    def encode(self, frame: pd.DataFrame) -> Batch:
        """One int64 tensor per schema field: `(B,)`, or `(B, max_len)` for genres."""
        missing = [column for column in RAW_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(
                f"missing raw feature column(s) {missing}; expected {list(RAW_COLUMNS)}"
            )
        ages = pd.to_numeric(frame["age"], errors="coerce")
        raw_values = {
            "user_id": frame["user_id"],
            "movie_id": frame["movie_id"],
            "gender": frame["gender"],
            "age": pd.Series(age_bucket(ages.to_numpy())).where(ages.notna().to_numpy()),
            "occupation": frame["occupation"],
            "zip_prefix": zip_prefix(frame["zip_code"].astype("string"), self.zip_prefix_len),
        }
        batch = {}
        for name, spec in self.schema.fields.items():
            if name == "genres":
                indices = self._encode_genres(frame["genres"], spec.max_len)
            else:
                indices = self.vocabs[name].encode(raw_values[name])
            batch[name] = torch.from_numpy(indices.astype(np.int64))
        return batch

    def _encode_genres(self, genres: pd.Series, max_len: int) -> np.ndarray:
        try:
            lists = pa.array(genres, type=pa.list_(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"column 'genres' must hold lists of genre names: {err}") from err
        values = pd.Series(lists.flatten().to_numpy(zero_copy_only=False))
        return encode_lists(lists.offsets.to_numpy(), values, self.vocabs["genres"], max_len)


class CTRPredictor:
    """A trained model and its encoder: raw feature rows in, click probabilities out."""

    def __init__(self, model: nn.Module, encoder: RawFeatureEncoder) -> None:
        self.model = model.eval()
        self.encoder = encoder

    @classmethod
    def from_files(cls, model_pt: Path, vocab_dir: Path) -> CTRPredictor:
        """Rebuild the model saved by `train` (`model.pt`) and read `vocab/<field>.parquet`."""
        saved = load_model(model_pt)
        vocabs = {
            name: Vocabulary.from_arrow(pq.read_table(vocab_dir / f"{name}.parquet"))
            for name in saved.schema.fields
        }
        encoder = RawFeatureEncoder(saved.schema, vocabs, saved.config.feature.zip_prefix_len)
        return cls(saved.model, encoder)

    @torch.inference_mode()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """float32 probabilities, one per row, scored `PREDICT_BATCH_SIZE` rows at a time."""
        probabilities = np.empty(len(frame), dtype=np.float32)
        for start in range(0, len(frame), PREDICT_BATCH_SIZE):
            stop = start + PREDICT_BATCH_SIZE
            logits = self.model(self.encoder.encode(frame.iloc[start:stop]))
            probabilities[start:stop] = torch.sigmoid(logits).numpy()
        return probabilities
