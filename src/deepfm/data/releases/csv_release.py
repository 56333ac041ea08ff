"""The CSV releases (ml-20m, ml-25m, ml-latest-small): `ratings.csv` and `movies.csv`.

UTF-8 with a header line; titles are quoted when they hold a comma or a quote
(a quote doubled inside). `ratings.csv` holds userId, movieId, rating (half stars,
0.5–5), timestamp; `movies.csv` movieId, title, genres (`|`-separated,
`(no genres listed)` for none). These releases have no user demographics: their
users are the ids that rate, the other user columns null.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.raw import RATINGS_SCHEMA, RawTables
from deepfm.data.releases.tables import HALF_STARS, assemble, items_from_genre_text
from deepfm.data.releases.text import Layout, Part, read_table

# The CSV releases' columns under their header names (errors name them so).
_RATINGS_CSV = [
    ("userId", pa.int32()),
    ("movieId", pa.int32()),
    ("rating", pa.float32()),
    ("timestamp", pa.int64()),
]
_MOVIES_CSV = [("movieId", pa.int32()), ("title", pa.string()), ("genres", pa.string())]


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
    return assemble(
        ratings,
        Part(ratings.name, users_table, ratings.row),  # users come from ratings.csv
        items_from_genre_text(movies),
        HALF_STARS,
    )


def _read_csv(path: Path, columns: list[tuple[str, pa.DataType]], names: list[str]) -> Part:
    """A CSV release file with the header `columns` names, its columns renamed to `names`."""
    layout = Layout("utf-8", ",", tuple(name for name, _ in columns), quoted=True)
    part = read_table(path, layout, columns)
    return Part(part.name, part.table.rename_columns(names), part.row)
