"""The synthetic releases' files other than the ratings, in each release's layout.

ml-100k: `u.user`, `u.item` (Latin-1), `u.genre`, `u.occupation`, `u.info`; ml-1m:
`users.dat`, `movies.dat` (Latin-1); the CSV releases: `movies.csv` (titles quoted
when they hold a comma or a quote), `links.csv`, `tags.csv` and, for ml-20m and
ml-25m, the genome files; each with a README saying the data is synthetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from deepfm.data.synthetic.population import ML1M_AGE_GROUPS, Movies, Release, Users

# ml-100k's occupations and how common each is there; ml-1m's codes 0-20 likewise.
ML100K_OCCUPATIONS = {
    "administrator": 79,
    "artist": 28,
    "doctor": 7,
    "educator": 95,
    "engineer": 67,
    "entertainment": 18,
    "executive": 32,
    "healthcare": 16,
    "homemaker": 7,
    "lawyer": 12,
    "librarian": 51,
    "marketing": 26,
    "none": 9,
    "other": 105,
    "programmer": 66,
    "retired": 14,
    "salesman": 12,
    "scientist": 31,
    "student": 196,
    "technician": 27,
    "writer": 45,
}
ML1M_OCCUPATION_COUNTS = (
    711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195, 129, 388, 142, 302, 144, 241, 502, 70,
    72, 281,
)  # fmt: skip


def release_files(
    rng: np.random.Generator, release: Release, movies: Movies, users: Users, ratings: int
) -> dict[str, bytes]:
    """Every file of the release but the ratings, by name."""
    readme = (
        f"Synthetic data in the file layout of MovieLens {release.name}, written by "
        f"deepfm.data.synthetic: {ratings} ratings, {len(users.counts)} users, "
        f"{len(movies.ids)} movies. It is not MovieLens data.\n"
    ).encode("ascii")
    if release.name == "ml-100k":
        return {"README": readme, **_ml100k_files(rng, movies, users, ratings)}
    if release.name == "ml-1m":
        return {"README": readme, **_ml1m_files(rng, movies, users)}
    return {"README.txt": readme, **_csv_files(rng, release, movies, users, ratings)}


def _ml100k_files(
    rng: np.random.Generator, movies: Movies, users: Users, ratings: int
) -> dict[str, bytes]:
    n_users = len(users.counts)
    # Ages in years, inside each user's age group (prepare buckets them back).
    lows = np.array([7, 18, 25, 35, 45, 50, 56])
    highs = np.array([17, 24, 34, 44, 49, 55, 73])
    ages = rng.integers(lows[users.age_group], highs[users.age_group] + 1)
    names = np.array(list(ML100K_OCCUPATIONS))
    weights = np.array(list(ML100K_OCCUPATIONS.values()), dtype=float)
    user_file = _lines(
        [
            np.arange(1, n_users + 1),
            ages,
            np.where(users.female, "F", "M"),
            rng.choice(names, n_users, p=weights / weights.sum()),
            _zip_codes(rng, n_users, canadian_share=0.01, plus_four_share=0.0),
        ],
        "|",
    )
    unknown = movies.years == 0
    dates = pd.Series("01-Jan-" + pd.Series(movies.years).astype(str)).where(~unknown, "")
    urls = ("http://us.imdb.com/M/title-exact?" + movies.titles.str.replace(" ", "%20")).where(
        ~unknown, ""
    )
    flags = [movies.genres[:, g].astype(int) for g in range(len(movies.genre_names))]
    item_file = _lines([movies.ids, movies.titles, dates, "", urls, *flags], "|")
    genre_file = "".join(f"{name}|{index}\n" for index, name in enumerate(movies.genre_names))
    return {
        "u.user": user_file.encode("ascii"),
        "u.item": item_file.encode("latin-1"),
        "u.genre": (genre_file + "\n").encode("ascii"),
        "u.occupation": "".join(f"{name}\n" for name in sorted(names)).encode("ascii"),
        "u.info": f"{n_users} users\n{len(movies.ids)} items\n{ratings} ratings\n".encode("ascii"),
    }


def _ml1m_files(rng: np.random.Generator, movies: Movies, users: Users) -> dict[str, bytes]:
    n_users = len(users.counts)
    codes = np.array(ML1M_OCCUPATION_COUNTS, dtype=float)
    user_file = _lines(
        [
            np.arange(1, n_users + 1),
            np.where(users.female, "F", "M"),
            np.array(list(ML1M_AGE_GROUPS))[users.age_group],
            rng.choice(len(codes), n_users, p=codes / codes.sum()),
            _zip_codes(rng, n_users, canadian_share=0.0, plus_four_share=0.01),
        ],
        "::",
    )
    genres = pc.binary_join(movies.genre_lists, "|").to_numpy(zero_copy_only=False)
    movie_file = _lines([movies.ids, movies.titles, genres], "::")
    return {
        "movies.dat": movie_file.encode("latin-1"),
        "users.dat": user_file.encode("ascii"),
    }


def _csv_files(
    rng: np.random.Generator, release: Release, movies: Movies, users: Users, ratings: int
) -> dict[str, bytes]:
    n_movies, n_users = len(movies.ids), len(users.counts)
    needs_quotes = movies.titles.str.contains('[,"]')
    titles = movies.titles.where(~needs_quotes, '"' + movies.titles.str.replace('"', '""') + '"')
    genres = pd.Series(pc.binary_join(movies.genre_lists, "|").to_numpy(zero_copy_only=False))
    genres = genres.where(genres != "", "(no genres listed)")
    tags = max(1, ratings // 100)
    tag_rows = pd.DataFrame(
        {
            "user": rng.integers(1, n_users + 1, tags),
            "movie": movies.ids[rng.integers(0, n_movies, tags)],
            "tag": rng.choice(TAGS, tags),
            "time": rng.integers(release.first_timestamp, release.last_timestamp, tags),
        }
    ).sort_values(["user", "movie", "tag"], kind="stable")
    files = {
        "movies.csv": "movieId,title,genres\n" + _lines([movies.ids, titles, genres], ","),
        "links.csv": "movieId,imdbId,tmdbId\n"
        + _lines(
            [
                movies.ids,
                pd.Series(rng.integers(1, 9_999_999, n_movies)).astype(str).str.zfill(7),
                rng.integers(1, 600_000, n_movies),
            ],
            ",",
        ),
        "tags.csv": "userId,movieId,tag,timestamp\n"
        + _lines([tag_rows[column].to_numpy() for column in tag_rows], ","),
    }
    if release.name in ("ml-20m", "ml-25m"):
        scored = min(n_movies, 50)
        relevance = rng.random((scored, len(TAGS)))
        files["genome-tags.csv"] = "tagId,tag\n" + _lines(
            [np.arange(1, len(TAGS) + 1), np.array(TAGS)], ","
        )
        files["genome-scores.csv"] = "movieId,tagId,relevance\n" + _lines(
            [
                np.repeat(movies.ids[:scored], len(TAGS)),
                np.tile(np.arange(1, len(TAGS) + 1), scored),
                pd.Series(relevance.ravel()).map("{:.5f}".format),
            ],
            ",",
        )
    return {name: text.encode("utf-8") for name, text in files.items()}


TAGS = ("atmospheric", "classic", "dark comedy", "funny", "predictable", "surreal", "twist ending")


def _zip_codes(
    rng: np.random.Generator, n: int, canadian_share: float, plus_four_share: float
) -> np.ndarray:
    """Five-digit US codes; some Canadian-style (`T8H1N`) or ZIP+4 (`55455-1234`)."""
    codes = pd.Series(rng.integers(0, 100_000, n)).astype(str).str.zfill(5)
    letters = np.array(list("ABCEGHJKLMNPRSTVXY"))
    canadian = pd.Series(rng.choice(letters, n)) + rng.integers(0, 10, n).astype(str)
    canadian = canadian + rng.choice(letters, n) + rng.integers(0, 10, n).astype(str)
    canadian = canadian + rng.choice(letters, n)
    plus_four = codes + "-" + pd.Series(rng.integers(0, 10_000, n)).astype(str).str.zfill(4)
    draw = rng.random(n)
    codes = codes.where(draw >= canadian_share, canadian)
    in_plus_four = (draw >= canadian_share) & (draw < canadian_share + plus_four_share)
    return codes.where(~in_plus_four, plus_four).to_numpy()


def _lines(columns: list, delimiter: str) -> str:
    """Rows of `columns` (arrays, Series or one constant string) joined by `delimiter`."""
    text = None
    for column in columns:
        values = column if isinstance(column, str) else pd.Series(np.asarray(column)).astype(str)
        text = values if text is None else text + delimiter + values
    return "".join((text + "\n").tolist())
