"""From parsed release files to the canonical tables: genre lists and the cross-table rules.

Genres come either as `|`-separated names (ml-1m, the CSV releases) or as 0/1 flag
columns (ml-100k and its mirror). `assemble` checks what holds across tables
(ratings on the release's scale, unique user and movie ids, every rated user and
movie present) and returns `RawTables`; a violation raises `RawDataError` naming
the line of the row at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.raw import (
    ITEMS_SCHEMA,
    RATINGS_SCHEMA,
    USERS_SCHEMA,
    RawDataError,
    RawTables,
)
from deepfm.data.releases.text import Part

NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class RatingScale:
    """The ratings a release allows: `lowest` to 5 in steps of `step`.

    Args:
        lowest: the smallest rating.
        step: the difference between neighbouring ratings.

    Example::

        HALF_STARS = RatingScale(0.5, 0.5)  # 0.5, 1.0, ..., 5.0
    """

    lowest: float
    step: float


WHOLE_STARS = RatingScale(1.0, 1.0)
HALF_STARS = RatingScale(0.5, 0.5)


def items_from_genre_text(movies: Part) -> Part:
    """The items of a movies file whose columns are movie_id, title and `|`-joined genres."""
    table = pa.table(
        {
            "movie_id": movies.table["movie_id"],
            "title": movies.table["title"],
            "genres": _split_genres(movies.table["genres"]),
        }
    )
    return Part(movies.name, table, movies.row)


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


def genre_lists(
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


def check_column(
    part: Part, number: int, values: pa.ChunkedArray, valid: pa.ChunkedArray, problem: str
) -> None:
    """Raise naming the first row where `valid` is false: its line, column and value."""
    index = pc.index(pc.invert(valid), True).as_py()
    if index >= 0:
        column = part.table.column_names[number - 1]
        raise RawDataError(
            f"{part.row(index)}, column {number} ({column}): {values[index].as_py()!r} {problem}"
        )


def assemble(ratings: Part, users: Part, items: Part, scale: RatingScale) -> RawTables:
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
