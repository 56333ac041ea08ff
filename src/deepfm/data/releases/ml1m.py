"""The ml-1m release: `ratings.dat`, `users.dat`, `movies.dat`.

Fields are `::`-separated; `movies.dat` is Latin-1. `ratings.dat` holds user_id,
movie_id, rating, timestamp; `users.dat` user_id, gender, age, occupation, zip_code,
where ages are group codes 1/18/25/35/45/50/56 (the lower bound of the group, 1 for
under 18) and occupations codes 0–20, named here as in the release README;
`movies.dat` movie_id, title, genres (`|`-separated).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.raw import RawTables
from deepfm.data.releases.tables import (
    WHOLE_STARS,
    assemble,
    check_column,
    items_from_genre_text,
)
from deepfm.data.releases.text import RATING_COLUMNS, Layout, Part, read_table

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
_DAT = Layout("utf-8", "::")
_MOVIES = Layout("latin-1", "::")


def parse_ml1m(folder: Path) -> RawTables:
    """Read the ml-1m release files in `folder` (`ratings.dat`, `users.dat`, `movies.dat`)."""
    ratings = read_table(folder / "ratings.dat", _DAT, RATING_COLUMNS)
    users = read_table(
        folder / "users.dat",
        _DAT,
        [
            ("user_id", pa.int32()),
            ("gender", pa.string()),
            ("age", pa.int32()),
            ("occupation", pa.int32()),
            ("zip_code", pa.string()),
        ],
    )
    movies = read_table(
        folder / "movies.dat",
        _MOVIES,
        [("movie_id", pa.int32()), ("title", pa.string()), ("genres", pa.string())],
    )
    age, occupation = users.table["age"], users.table["occupation"]
    check_column(
        users,
        3,
        age,
        pc.is_in(age, pa.array(ML1M_AGE_GROUPS, pa.int32())),
        f"is not an ml-1m age group {list(ML1M_AGE_GROUPS)}",
    )
    known = pc.and_(pc.greater_equal(occupation, 0), pc.less(occupation, len(ML1M_OCCUPATIONS)))
    check_column(
        users,
        4,
        occupation,
        known,
        f"is not an ml-1m occupation code (0–{len(ML1M_OCCUPATIONS) - 1})",
    )
    users_table = users.table.set_column(
        3, "occupation", pa.array(ML1M_OCCUPATIONS).take(occupation)
    )
    return assemble(
        ratings,
        Part(users.name, users_table, users.row),
        items_from_genre_text(movies),
        WHOLE_STARS,
    )
