"""The ml-100k release: `u.data`, `u.user`, `u.item`, `u.genre`.

`u.data` is tab-separated (user_id, movie_id, rating, timestamp); the others are
`|`-separated: `u.user` holds user_id, age (years), gender, occupation, zip_code;
`u.item` (Latin-1) holds movie_id, title, release date, video release date, IMDb
URL and one 0/1 flag per genre, in the order `u.genre` lists them as `name|index`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from deepfm.data.raw import ITEMS_SCHEMA, USERS_SCHEMA, RawDataError, RawTables
from deepfm.data.releases.tables import WHOLE_STARS, assemble, genre_lists
from deepfm.data.releases.text import RATING_COLUMNS, Layout, Part, read_table

_PIPES = Layout("utf-8", "|")
_TABS = Layout("utf-8", "\t")
_ITEMS = Layout("latin-1", "|")
# u.user holds the canonical user columns, age before gender.
_USER_COLUMNS = [
    (name, USERS_SCHEMA.field(name).type)
    for name in ("user_id", "age", "gender", "occupation", "zip_code")
]
# u.item: the movie id, these text columns, then one 0/1 flag per genre of u.genre.
_ITEM_TEXT_COLUMNS = ("title", "release_date", "video_release_date", "imdb_url")


def parse_ml100k(folder: Path) -> RawTables:
    """Read the ml-100k release files in `folder` (`u.data`, `u.user`, `u.item`, `u.genre`)."""
    genre_file = read_table(
        folder / "u.genre", _PIPES, [("name", pa.string()), ("index", pa.int32())]
    )
    genres = genre_file.table.sort_by("index")
    if genres["index"].to_pylist() != list(range(genres.num_rows)):
        raise RawDataError(
            f"{genre_file.name}: genre indices must be 0..{genres.num_rows - 1}, "
            f"got {sorted(genres['index'].to_pylist())}"
        )
    genre_names = genres["name"].to_pylist()

    ratings = read_table(folder / "u.data", _TABS, RATING_COLUMNS)
    users = read_table(folder / "u.user", _PIPES, _USER_COLUMNS)
    items = read_table(
        folder / "u.item",
        _ITEMS,
        [
            ("movie_id", pa.int32()),
            *[(name, pa.string()) for name in _ITEM_TEXT_COLUMNS],
            *[(name, pa.int8()) for name in genre_names],
        ],
    )
    flags = np.column_stack([items.table[name].to_numpy() for name in genre_names])
    items_table = pa.table(
        {
            "movie_id": items.table["movie_id"],
            "title": items.table["title"],
            "genres": genre_lists(flags, genre_names, items.row),
        },
        schema=ITEMS_SCHEMA,
    )
    return assemble(
        ratings,
        Part(users.name, users.table.select(USERS_SCHEMA.names), users.row),
        Part(items.name, items_table, items.row),
        WHOLE_STARS,
    )
