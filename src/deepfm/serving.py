"""Serving on raw features: encode them as `prepare` did, then score with a trained model.

`CTRPredictor` takes a DataFrame of raw columns (one per model field, named by its
`deepfm.data.fields.FieldDef.raw_column`) and returns click probabilities;
`deepfm.tracking.CTRPyfunc` wraps it as the MLflow model of each run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from deepfm.config import FeatureConfig
from deepfm.data.dataset import Batch
from deepfm.data.features import Vocabulary, encode_lists, list_parts, text_lists
from deepfm.data.fields import FIELD_DEFS, FieldDef
from deepfm.data.schema import FeatureType, Schema
from deepfm.errors import UserError
from deepfm.models.registry import load_model
from deepfm.predict import PREDICT_BATCH_SIZE, predict_logits

# What this module needs at serving time besides mlflow and the deepfm package itself.
SERVING_PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "pyyaml", "cloudpickle")


class ServingError(UserError, ValueError):
    """Input a model cannot score, or a model and vocabularies that do not belong together.

    Example::

        raise ServingError("column 'genres' row 3: expected a list of strings")
    """


class RawFeatureEncoder:
    """Raw columns -> the index tensors a model takes, with the prepare-time transforms.

    Each schema field is computed from its `FieldDef.raw_column` by its `FieldDef.values`,
    as `prepare` did. Values not in a field's vocabulary, and missing values, map to 0
    (OOV); rows are never dropped.

    Args:
        schema: the model's fields (their order, kinds and sequence lengths).
        vocabs: one fitted vocabulary per schema field.
        feature: the feature config the model was prepared with (e.g. `zip_prefix_len`).

    Example::

        encoder = RawFeatureEncoder(schema, vocabs, config.feature)
        batch = encoder.encode(frame)  # {"user_id": (B,) int64, ..., "genres": (B, 6) int64}
    """

    def __init__(
        self, schema: Schema, vocabs: dict[str, Vocabulary], feature: FeatureConfig
    ) -> None:
        missing = [name for name in schema.fields if name not in vocabs]
        if missing:
            raise ServingError(f"no vocabulary for schema field(s) {missing}")
        unknown = [name for name in schema.fields if name not in FIELD_DEFS]
        if unknown:
            raise ServingError(
                f"schema field(s) {unknown} have no definition; known fields: {list(FIELD_DEFS)}"
            )
        self.schema = schema
        self.vocabs = vocabs
        self.feature = feature
        self.fields = [FIELD_DEFS[name] for name in schema.fields]

    @property
    def required_columns(self) -> tuple[str, ...]:
        """The raw columns every input frame must have: one per schema field."""
        return tuple(field.raw_column for field in self.fields)

    def encode(self, frame: pd.DataFrame) -> Batch:
        """One int64 tensor per schema field: `(B,)`, or `(B, max_len)` for a sequence."""
        required = self.required_columns
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise ServingError(
                f"missing raw feature column(s) {missing}; expected {list(required)}"
            )
        self._check_kinds(frame)
        batch = {}
        for field, spec in zip(self.fields, self.schema.fields.values(), strict=True):
            vocab = self.vocabs[field.name]
            if field.kind is FeatureType.SEQUENCE:
                offsets, flat_values = list_parts(self._lists(field, frame))
                indices = encode_lists(offsets, flat_values, vocab, spec.max_len)
            else:
                indices = vocab.encode(field.compute(frame, self.feature))
            batch[field.name] = torch.from_numpy(indices.astype(np.int64))
        return batch

    def _check_kinds(self, frame: pd.DataFrame) -> None:
        """Numbers where the field takes numbers, text or numbers as its vocabulary holds.

        A wrong kind would silently turn every value into OOV, so it is an error;
        an all-null column is fine (all OOV, as documented).
        """
        for field in self.fields:
            if field.kind is not FeatureType.SPARSE or field.raw_kind == "any":
                continue
            kind = "numbers"
            vocab_values = self.vocabs[field.name].values
            if field.raw_kind == "vocabulary" and not pd.api.types.is_numeric_dtype(vocab_values):
                kind = "text"
            values = frame[field.raw_column]
            if values.isna().all():
                continue
            # By the values present: an object column of text and None/NaN holds text.
            found = pd.api.types.infer_dtype(values, skipna=True)
            is_text = found == "string"
            is_number = found in ("integer", "floating", "mixed-integer-float")
            if (kind == "numbers" and not is_number) or (kind == "text" and not is_text):
                raise ServingError(
                    f"column {field.raw_column!r} must hold {kind}, not {values.dtype} values "
                    f"(e.g. {values.dropna().iloc[0]!r})"
                )

    def _lists(self, field: FieldDef, frame: pd.DataFrame) -> pa.ListArray:
        """A sequence field's values; text instead of lists is an error naming the column."""
        values = field.values(frame[field.raw_column], self.feature)
        expected = f"column {field.raw_column!r} must hold lists of {field.raw_description}"
        if pd.api.types.infer_dtype(values, skipna=True) == "string":
            raise ServingError(f"{expected}, not text (e.g. {values.dropna().iloc[0]!r})")
        try:
            return text_lists(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise ServingError(f"{expected}: {err}") from err


class CTRPredictor:
    """A trained model and its encoder: raw feature rows in, click probabilities out.

    Args:
        model: the trained model (put in eval mode); it scores on the device it is on.
        encoder: the raw-feature encoder of the model's schema and vocabularies.

    Example::

        predictor = CTRPredictor.from_files(Path("models/deepfm/seed-42/model.pt"))
        probabilities = predictor.predict(frame)  # float32, one per row of `frame`
    """

    def __init__(self, model: nn.Module, encoder: RawFeatureEncoder) -> None:
        self.model = model.eval()
        self.encoder = encoder

    @classmethod
    def from_files(cls, model_pt: Path, vocab_dir: Path | None = None) -> CTRPredictor:
        """Rebuild the model saved by `train` (`model.pt`) and read `vocab/<field>.parquet`.

        `vocab_dir` defaults to the prepared data the model was trained on
        (`<data.processed_dir>/<data.dataset>/vocab`, relative to the project root).
        Vocabularies of another size than the model's tables are an error.
        """
        saved = load_model(model_pt)
        vocab_dir = vocab_dir or saved.config.data.processed_path / "vocab"
        vocabs = {}
        for name, spec in saved.schema.fields.items():
            path = vocab_dir / f"{name}.parquet"
            if not path.exists():
                raise FileNotFoundError(f"{path}: vocabulary of field {name!r} not found")
            vocabs[name] = Vocabulary.from_arrow(pq.read_table(path))
            if vocabs[name].size != spec.vocabulary_size:
                raise ServingError(
                    f"{path} has {vocabs[name].size} indices but {model_pt} has "
                    f"{spec.vocabulary_size} for {name!r}: the vocabularies are from another "
                    "prepare run than the model"
                )
        encoder = RawFeatureEncoder(saved.schema, vocabs, saved.config.feature)
        return cls(saved.model, encoder)

    def predict(self, frame: pd.DataFrame, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """float32 probabilities, one per row, encoded and scored `batch_size` rows at a time."""
        device = next(self.model.parameters()).device

        def features_of(rows: slice) -> Batch:
            encoded = self.encoder.encode(frame.iloc[rows])
            return {name: column.to(device) for name, column in encoded.items()}

        logits = predict_logits(self.model, len(frame), features_of, device, batch_size)
        return torch.sigmoid(logits).cpu().numpy()
