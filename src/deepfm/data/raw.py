"""Canonical raw MovieLens tables: the one form every release is turned into.

`data/raw/<dataset>/` holds, whichever source served the release:

- `ratings.parquet`: user_id int32, movie_id int32, rating float32 (1–5, or 0.5–5
  in half stars for the CSV releases), timestamp int64 (Unix seconds); rows in the
  release file's order.
- `users.parquet`: user_id int32, gender string ("M"/"F"), age int32 (years; ml-1m
  gives the lower bound of the user's age group, 1 for under 18), occupation string,
  zip_code string (not always numeric); sorted by user_id. The CSV releases have no
  demographics: their users are the ids in ratings, the other columns null.
- `items.parquet`: movie_id int32, title string (the year in parentheses, when the
  release gives one), genres list<string> (genre names in the release's order; a
  movie without genres has an empty list); sorted by movie_id.
- `fingerprint.json`: {"dataset", "fingerprint", "rows": {"ratings", "users", "items"}};
  the fingerprint is the SHA-256 of the tables' content (`RawTables.fingerprint`).

Every user_id and movie_id in ratings is present in users and items. Parquet files
are written with fixed settings and no pandas metadata, so the same content gives
the same bytes.

The release formats are parsed by `deepfm.data.releases` (`parse_release`, one
module per format); this module knows only the canonical form.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deepfm import atomic
from deepfm.errors import UserError

logger = logging.getLogger(__name__)

RATINGS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("movie_id", pa.int32()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
    ]
)
USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("gender", pa.string()),
        ("age", pa.int32()),
        ("occupation", pa.string()),
        ("zip_code", pa.string()),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [("movie_id", pa.int32()), ("title", pa.string()), ("genres", pa.list_(pa.string()))]
)
SCHEMAS = {"ratings": RATINGS_SCHEMA, "users": USERS_SCHEMA, "items": ITEMS_SCHEMA}
FILES = {"ratings": "ratings.parquet", "users": "users.parquet", "items": "items.parquet"}
FINGERPRINT_FILE = "fingerprint.json"
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "store_schema": True}


class RawDataError(UserError, ValueError):
    """Raw MovieLens input that is missing or malformed; the message names file and line.

    Example::

        raise RawDataError("u.data line 17 column 3: expected an integer rating, got 'x'")
    """


@dataclass
class RawTables:
    """The three canonical tables (see the module docstring for their columns).

    Args:
        ratings: `user_id, movie_id, rating, timestamp`, one row per rating.
        users: one row per user (demographics where the release has them).
        items: one row per movie (title, genres).

    Example::

        tables = read_raw(Path("data/raw/ml-100k"))
        tables.rows()  # {"ratings": 100000, "users": 943, "items": 1682}
    """

    ratings: pa.Table
    users: pa.Table
    items: pa.Table

    def rows(self) -> dict[str, int]:
        return {
            "ratings": self.ratings.num_rows,
            "users": self.users.num_rows,
            "items": self.items.num_rows,
        }

    def fingerprint(self) -> str:
        """SHA-256 hex of the content: each table's Arrow IPC stream, in fixed order."""
        digest = hashlib.sha256()
        for table in (self.ratings, self.users, self.items):
            table = table.combine_chunks().replace_schema_metadata(None)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            digest.update(sink.getvalue())
        return digest.hexdigest()


def write_raw(tables: RawTables, folder: Path, dataset: str) -> dict:
    """Write the canonical folder atomically: `folder` is replaced whole, or left as it was.

    Returns what `fingerprint.json` holds.
    """
    summary = {"dataset": dataset, "fingerprint": tables.fingerprint(), "rows": tables.rows()}
    with atomic.replace_dir(folder) as tmp:
        for key, name in FILES.items():
            table = getattr(tables, key).combine_chunks().replace_schema_metadata(None)
            with atomic.open_for_write(tmp / name) as path:
                pq.write_table(table, path, **PARQUET_OPTIONS)
        atomic.write_text(tmp / FINGERPRINT_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def read_raw(folder: Path) -> RawTables:
    """Read the canonical folder written by `write_raw`."""
    tables = {}
    for key, name in FILES.items():
        path = folder / name
        if not path.is_file():
            raise RawDataError(f"{path}: missing; run the download stage first")
        # Parquet names a list's child "element"; the cast restores the canonical types.
        tables[key] = cast_table(pq.read_table(path), SCHEMAS[key], str(path)).combine_chunks()
    return RawTables(**tables)


def cast_table(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """`table`'s `schema` columns in their canonical types; errors name `name`."""
    missing = [column for column in schema.names if column not in table.column_names]
    if missing:
        raise RawDataError(f"{name}: missing columns {missing}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise RawDataError(f"{name}: {err}") from None
