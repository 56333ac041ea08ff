"""The feature schema: every model input described by name, type, vocabulary and width.

A model is rebuilt from a `Schema` and a state dict alone, so the schema is
saved beside every prepared dataset (`schema.json`) and every trained model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from deepfm.errors import UserError


class PreparedDataError(UserError, ValueError):
    """A prepared file (`schema.json`, a split's Parquet) that is unreadable, incomplete or
    does not match the rest of the prepared data; the message names the file and the key,
    column or split.

    Example::

        raise PreparedDataError(f"{path}: not a schema written by prepare")
    """


JSON_KINDS = {str: "string", list: "array"}


class FeatureType(Enum):
    """How a field's indices are laid out in a batch.

    Example::

        FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6)
    """

    SPARSE = "sparse"  # one index per row
    SEQUENCE = "sequence"  # `max_len` indices per row, 0-padded, mean-pooled


@dataclass(frozen=True)
class FieldSpec:
    """One model input: `vocabulary_size` counts index 0 (OOV and padding).

    Args:
        name: the field's name (a key of `deepfm.data.fields.FIELD_DEFS`).
        feature_type: `SPARSE` (one index per row) or `SEQUENCE` (`max_len` indices).
        vocabulary_size: table rows, OOV / padding index 0 included.
        embedding_dim: the width of the field's embedding table.
        max_len: indices per row of a sequence field; 1 for a sparse field.

    Example::

        FieldSpec("user_id", FeatureType.SPARSE, vocabulary_size=944, embedding_dim=16)
    """

    name: str
    feature_type: FeatureType
    vocabulary_size: int
    embedding_dim: int
    max_len: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "feature_type": self.feature_type.value,
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "max_len": self.max_len,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "") -> FieldSpec:
        """The spec `to_dict` gave; `where` prefixes key names in errors (`fields[2].`)."""
        feature_type = _item(values, "feature_type", str, where)
        if feature_type not in {kind.value for kind in FeatureType}:
            allowed = [kind.value for kind in FeatureType]
            raise PreparedDataError(
                f"{where}feature_type must be one of {allowed}, got {feature_type!r}"
            )
        return cls(
            name=_item(values, "name", str, where),
            feature_type=FeatureType(feature_type),
            vocabulary_size=_item(values, "vocabulary_size", int, where),
            embedding_dim=_item(values, "embedding_dim", int, where),
            max_len=_item(values, "max_len", int, where) if "max_len" in values else 1,
        )


@dataclass(frozen=True)
class Schema:
    """Ordered fields (the order of `flat_embeddings`) and the label column's name.

    Args:
        fields: field name -> `FieldSpec`, in model order.
        label: the label column of the prepared Parquet files.

    Example::

        schema = Schema.of([FieldSpec("user_id", FeatureType.SPARSE, 944, 16)])
        schema.total_embedding_dim  # 16
    """

    fields: dict[str, FieldSpec]
    label: str = "label"

    @classmethod
    def of(cls, specs: list[FieldSpec], label: str = "label") -> Schema:
        return cls({spec.name: spec for spec in specs}, label)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def total_embedding_dim(self) -> int:
        return sum(spec.embedding_dim for spec in self.fields.values())

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "fields": [spec.to_dict() for spec in self.fields.values()]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Schema:
        """The schema `to_dict` gave; a missing or wrong key is a `PreparedDataError`."""
        fields = _item(values, "fields", list, "")
        if not fields:
            raise PreparedDataError("fields is empty")
        specs = [FieldSpec.from_dict(spec, f"fields[{i}].") for i, spec in enumerate(fields)]
        return cls.of(specs, _item(values, "label", str, ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read `schema.json`; an unreadable or incomplete one is an error naming it."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            where = f"line {err.lineno} column {err.colno}"
            raise PreparedDataError(f"{path}: not valid JSON ({err.msg} at {where})") from None
        except UnicodeDecodeError as err:
            raise PreparedDataError(f"{path}: not UTF-8 text ({err.reason})") from None
        except PreparedDataError as err:
            raise PreparedDataError(f"{path}: {err}") from None


def _item(values: Any, key: str, kind: type, where: str) -> Any:
    """`values[key]`: a `kind`, and for `int` a whole number >= 1."""
    if not isinstance(values, dict):
        raise PreparedDataError(f"{where.rstrip('.') or 'the top level'} must be a JSON object")
    if key not in values:
        raise PreparedDataError(f"missing key {where}{key}")
    value = values[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PreparedDataError(f"{where}{key} must be a whole number >= 1, got {value!r}")
    elif not isinstance(value, kind):
        raise PreparedDataError(f"{where}{key} must be a JSON {JSON_KINDS[kind]}, got {value!r}")
    return value
