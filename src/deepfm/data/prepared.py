"""The fingerprint that ties a model to the prepared data it was trained on."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deepfm.data.schema import Schema


def prepared_data_fingerprint(processed: Path, schema: Schema) -> str:
    """SHA-256 of `schema.json` and of each schema field's `vocab/<field>.parquet`.

    A missing vocabulary raises `FileNotFoundError` naming it.
    """
    digest = hashlib.sha256((processed / "schema.json").read_bytes())
    for name in schema.fields:
        path = processed / "vocab" / f"{name}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: vocabulary of field {name!r} not found; run prepare")
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
