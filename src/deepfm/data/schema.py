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


class FeatureType(Enum):
    SPARSE = "sparse"  # one index per row
    SEQUENCE = "sequence"  # `max_len` indices per row, 0-padded, mean-pooled


@dataclass(frozen=True)
class FieldSpec:
    """One model input: `vocabulary_size` counts index 0 (OOV and padding)."""

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
    def from_dict(cls, values: dict[str, Any]) -> FieldSpec:
        return cls(
            name=values["name"],
            feature_type=FeatureType(values["feature_type"]),
            vocabulary_size=int(values["vocabulary_size"]),
            embedding_dim=int(values["embedding_dim"]),
            max_len=int(values.get("max_len", 1)),
        )


@dataclass(frozen=True)
class Schema:
    """Ordered fields (the order of `flat_embeddings`) and the label column's name."""

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
        return cls.of([FieldSpec.from_dict(v) for v in values["fields"]], values["label"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
