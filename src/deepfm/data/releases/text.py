"""Reading a release's text files into typed columns, and naming the line at fault.

A file is described by its `Layout` (encoding, field separator, header line,
quoting) and parsed whole-column by pyarrow. When pyarrow rejects it, a second,
slower pass bisects the lines to find the first bad one, and `RawDataError` names
the file and the 1-based line (and column, when one is at fault).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from deepfm.data.raw import RATINGS_SCHEMA, RawDataError

# The ratings columns of the files without a header (u.data, ratings.dat).
RATING_COLUMNS = [(field.name, field.type) for field in RATINGS_SCHEMA]
# The parser takes one character between fields; `::` is turned into this first.
_SPLIT = "\t"
_NOT_SPACE = re.compile(rb"\S")


@dataclass(frozen=True)
class Layout:
    """How a release file is written.

    `header` is the first line's column names (none: every line is data); `quoted`
    files may enclose a field in double quotes (doubled inside), as CSV does.

    Args:
        encoding: the file's text encoding ("utf-8" or "latin-1").
        delimiter: what separates fields ("|", "\\t", "::", ",").
        header: the column names of the first line, if the file has one.
        quoted: whether a field may be enclosed in double quotes.

    Example::

        ML1M = Layout("latin-1", "::")  # no header, never quoted
    """

    encoding: str
    delimiter: str
    header: tuple[str, ...] = ()
    quoted: bool = False


@dataclass(frozen=True)
class Part:
    """A parsed table, the file name errors use, and the way from a table row to its line.

    Args:
        name: the file name (or label) errors start with.
        table: the parsed columns.
        row: table row index -> where it stands, e.g. "u.data line 17".

    Example::

        part = Part("u.data", table, lambda index: f"u.data row {index + 1}")
    """

    name: str
    table: pa.Table
    row: Callable[[int], str]


def read_table(path: Path, layout: Layout, columns: list[tuple[str, pa.DataType]]) -> Part:
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
    return Part(path.name, table, lambda index: _line_of_row(path, header_lines, index))


def _as_parser_input(body: memoryview, layout: Layout) -> memoryview:
    """UTF-8 text with a one-character field separator; line breaks stay where they were."""
    if layout.encoding == "latin-1":
        body = memoryview(bytes(body).decode("latin-1").encode("utf-8"))
    if len(layout.delimiter) > 1:
        body = memoryview(bytes(body).replace(layout.delimiter.encode(), _SPLIT.encode()))
    return body


def _parse(body: memoryview, layout: Layout, columns: list[tuple[str, pa.DataType]]) -> pa.Table:
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
    layout: Layout,
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
