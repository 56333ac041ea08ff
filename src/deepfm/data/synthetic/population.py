"""The synthetic releases' movies and users, shaped like each real release.

`RELEASES` holds the real releases' counts and ranges; `sizes` scales users
(linearly) and movies (with the square root) to a rating count. Movies get ids,
titles, years and 1 to `max_genres` genres weighted as in ml-25m, a Zipf-like
popularity and a quality correlated with it; users get heavy-tailed rating counts
(at least `MIN_USER_RATINGS`), gender, age group, a bias and a first-rating time.
Quality, bias and the signal's other parts are scaled by the `*_SD` constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

MIN_USER_RATINGS = 20  # every MovieLens release keeps only users with at least 20
MIN_USERS, MIN_MOVIES = 10, 20
MAX_USER_SHARE = 0.5  # a user rates at most this share of the movies

# Genre weights: movies per genre in ml-25m (ml-100k/ml-1m spell Children's).
GENRE_WEIGHTS = {
    "Action": 7348,
    "Adventure": 4145,
    "Animation": 2929,
    "Children": 2935,
    "Comedy": 16870,
    "Crime": 5319,
    "Documentary": 5605,
    "Drama": 25606,
    "Fantasy": 2731,
    "Film-Noir": 353,
    "Horror": 5989,
    "IMAX": 195,
    "Musical": 1054,
    "Mystery": 2925,
    "Romance": 7719,
    "Sci-Fi": 3595,
    "Thriller": 8654,
    "War": 1874,
    "Western": 1399,
}
# Share of movies with 1, 2, ... genres (cut at the release's maximum and renormalised).
GENRE_COUNT_SHARES = (0.40, 0.33, 0.17, 0.06, 0.025, 0.01, 0.003, 0.0015, 0.0005, 0.0002)
ML1M_AGE_GROUPS = {1: 222, 18: 1103, 25: 2096, 35: 1193, 45: 550, 50: 496, 56: 380}

# Title parts: plain words, Latin-1 words (every release), and a word outside Latin-1
# (UTF-8 CSV releases only).
TITLE_WORDS = np.array([
    "Dark", "Last", "Little", "Great", "Secret", "Lost", "Silent", "Wild", "Broken", "Golden",
    "Red", "Long", "Night", "Day", "City", "River", "Love", "War", "Man", "Woman", "Child",
    "Dream", "Road", "House", "Heart", "Story", "Game", "Star", "Shadow", "King", "Queen",
    "Summer", "Winter", "Storm", "Island", "Return", "Journey", "Promise", "Letter", "Song",
])  # fmt: skip
LATIN1_WORDS = np.array(["Misérables", "Amélie", "Señor", "Mädchen", "Garçon", "Café"])
NON_LATIN1_WORD = "Łódź"


@dataclass(frozen=True)
class Release:
    """What the generator needs to know about one real release.

    Args:
        name: the release (`ml-100k`, ...).
        ratings, users: the real release's counts.
        movies: movies in its movies file.
        first_timestamp, last_timestamp: its first and last rating's Unix seconds.
        last_year: the newest release year among its movies.
        movie_id_gap: the mean step between consecutive movie ids.
        max_genres: the most genres a movie has.
        no_genres_share: the share of movies with "(no genres listed)" (CSV releases).
        no_year_share: the share of titles without a year (CSV releases).

    Example::

        users, movies = sizes(RELEASES["ml-1m"], ratings=50_000)
    """

    name: str
    ratings: int
    users: int
    movies: int
    first_timestamp: int
    last_timestamp: int
    last_year: int
    movie_id_gap: float
    max_genres: int
    no_genres_share: float
    no_year_share: float

    @property
    def csv(self) -> bool:
        return self.name not in ("ml-100k", "ml-1m")


RELEASES = {
    release.name: release
    for release in (
        Release("ml-100k", 100_000, 943, 1_682, 874_724_710, 893_286_638, 1998, 1.0, 6, 0, 0),
        Release("ml-1m", 1_000_209, 6_040, 3_883, 956_703_932, 1_046_454_590, 2000, 1.02, 6, 0, 0),
        Release(
            "ml-20m", 20_000_263, 138_493, 27_278, 789_652_009, 1_427_784_002, 2015, 4.8, 10,
            0.009, 0.001,
        ),
        Release(
            "ml-25m", 25_000_095, 162_541, 62_423, 789_652_009, 1_574_327_703, 2019, 3.35, 10,
            0.081, 0.007,
        ),
        Release(
            "ml-latest-small", 100_836, 610, 9_742, 828_124_615, 1_537_799_250, 2018, 19.9, 10,
            0.0035, 0.001,
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Movies:
    """The movies file's content, and each movie's part of the signal.

    Args:
        ids: int64 movie ids, increasing.
        titles: the titles, with the year in parentheses when the movie has one.
        years: int64 release years; 0 when the title has none.
        genre_names: the release's genres, in column order of `genres`.
        genres: `(movies, genres)` bool, which genres each movie has.
        popularity_cdf: the cumulative probability of being rated, in movie order.
        quality: each movie's part of the signal, mean 0 and variance 1 over the ratings.

    Example::

        movies = make_movies(np.random.default_rng(0), RELEASES["ml-100k"], n_movies=200)
    """

    ids: np.ndarray
    titles: pd.Series
    years: np.ndarray
    genre_names: tuple[str, ...]
    genres: np.ndarray
    popularity_cdf: np.ndarray
    quality: np.ndarray

    @property
    def genre_lists(self) -> pa.ListArray:
        """Each movie's genre names, in genre order (alphabetical, as the releases list them)."""
        movie, genre = np.nonzero(self.genres)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(movie, minlength=len(self.ids)))])
        names = pa.array(np.asarray(self.genre_names, dtype=object)[genre], pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), names)


@dataclass(frozen=True)
class Users:
    """Users 1..n: rating counts, demographics and each user's part of the signal.

    Args:
        counts: ratings per user.
        female: bool, the user's gender.
        age_group: index into `ML1M_AGE_GROUPS`.
        bias: each user's part of the signal.
        start: int64 Unix seconds of the user's first rating.

    Example::

        users = make_users(rng, RELEASES["ml-100k"], n_users=50, ratings=2_000, cap=100)
    """

    counts: np.ndarray
    female: np.ndarray
    age_group: np.ndarray
    bias: np.ndarray
    start: np.ndarray

    @property
    def group(self) -> np.ndarray:
        """Gender x age group, the users who share part of their genre taste."""
        return self.female * len(ML1M_AGE_GROUPS) + self.age_group


# Spread of each part of the latent rating score (see the module docstring).
QUALITY_SD, USER_SD, NOISE_SD = 0.8, 0.5, 1.0
GROUP_AFFINITY_SD, OWN_AFFINITY_SD = 0.4, 0.6
POPULARITY_CORRELATION = 0.4  # between a movie's quality and its log popularity


def sizes(release: Release, ratings: int) -> tuple[int, int]:
    """(users, movies) for `ratings`: the real counts scaled, with room for every rating."""
    scale = ratings / release.ratings
    movies = max(MIN_MOVIES, round(release.movies * math.sqrt(scale)))
    users = max(MIN_USERS, round(release.users * scale), math.ceil(ratings / user_cap(movies)))
    return users, movies


def user_cap(movies: int) -> int:
    """The most ratings one user gets."""
    return int(movies * MAX_USER_SHARE)


def make_movies(rng: np.random.Generator, release: Release, n_movies: int) -> Movies:
    """Ids, titles, years and genres; popularity and quality for the signal."""
    ids = np.cumsum(rng.geometric(1 / release.movie_id_gap, n_movies)).astype(np.int64)
    years = np.round(release.last_year - rng.exponential(14.0, n_movies))
    years = np.clip(years, 1902, release.last_year).astype(np.int64)
    words = rng.choice(TITLE_WORDS, (n_movies, 2))
    titles = pd.Series(words[:, 0], dtype=object) + " " + words[:, 1]
    latin1 = rng.random(n_movies) < 0.02
    titles[latin1] += " " + rng.choice(LATIN1_WORDS, int(latin1.sum()))
    titles[rng.random(n_movies) < 0.15] += ", The"  # "Matrix, The", as MovieLens writes it
    if release.csv:
        titles[rng.random(n_movies) < 0.005] += " " + NON_LATIN1_WORD
        years[rng.random(n_movies) < release.no_year_share] = 0
    genre_names = GENRES[release.name]
    genres = _choose_genres(rng, release, n_movies, genre_names)

    # Edge cases on the first movies, whatever the size: a Latin-1 title with a
    # comma, a title with quotes; in the CSV releases a title without a year and a
    # movie without genres; in ml-100k an "unknown" movie like its movie 267.
    titles[0], titles[1] = "Misérables, Les", 'Kid\'s "Story", The'
    if release.csv:
        titles[2], years[2] = "Untitled Project", 0
        genres[3] = False
    if release.name == "ml-100k":
        years[2] = 0
        genres[2] = False
        genres[2, 0] = True
    titles[years > 0] += " (" + pd.Series(years[years > 0]).astype(str).to_numpy() + ")"
    if release.name == "ml-100k":
        titles[2] = "unknown"

    weights = 1.0 / (rng.permutation(n_movies) + 61.0)  # Zipf-like, flattened at the top
    log_weights = np.log(weights)
    popularity = (log_weights - log_weights.mean()) / log_weights.std()
    rho = POPULARITY_CORRELATION
    quality = rho * popularity + math.sqrt(1 - rho**2) * rng.standard_normal(n_movies)
    # Standardised over ratings, not movies: popular movies are rated more often.
    share = weights / weights.sum()
    quality -= share @ quality
    quality /= math.sqrt(share @ quality**2)
    return Movies(
        ids=ids,
        titles=titles,
        years=years,
        genre_names=genre_names,
        genres=genres,
        popularity_cdf=np.cumsum(share),
        quality=quality,
    )


_OLD_GENRES = tuple(
    "Children's" if name == "Children" else name for name in GENRE_WEIGHTS if name != "IMAX"
)
GENRES = {  # in each release's order
    "ml-100k": ("unknown", *_OLD_GENRES),
    "ml-1m": _OLD_GENRES,
    "ml-20m": tuple(GENRE_WEIGHTS),
    "ml-25m": tuple(GENRE_WEIGHTS),
    "ml-latest-small": tuple(GENRE_WEIGHTS),
}


def _choose_genres(
    rng: np.random.Generator, release: Release, n_movies: int, names: tuple[str, ...]
) -> np.ndarray:
    """1..max_genres distinct genres per movie, drawn by weight (an exponential race)."""
    weights = np.array([GENRE_WEIGHTS.get(name.replace("'s", ""), 0) for name in names], float)
    shares = np.array(GENRE_COUNT_SHARES[: release.max_genres])
    counts = rng.choice(len(shares), n_movies, p=shares / shares.sum()) + 1
    with np.errstate(divide="ignore"):
        race = rng.exponential(1.0, (n_movies, len(names))) / weights  # "unknown": never
    order = np.argsort(race, axis=1)
    chosen = np.zeros((n_movies, len(names)), dtype=bool)
    positions = np.arange(len(names)) < counts[:, None]
    np.put_along_axis(chosen, order, positions, axis=1)
    if release.csv:
        chosen[rng.random(n_movies) < release.no_genres_share] = False
    return chosen


def make_users(
    rng: np.random.Generator, release: Release, n_users: int, ratings: int, cap: int
) -> Users:
    """Rating counts (heavy-tailed, summing to `ratings`), demographics and the signal."""
    age_weights = np.array(list(ML1M_AGE_GROUPS.values()), dtype=float)
    span = release.last_timestamp - release.first_timestamp
    return Users(
        counts=rating_counts(rng, n_users, ratings, cap),
        female=rng.random(n_users) < 0.29,
        age_group=rng.choice(len(age_weights), n_users, p=age_weights / age_weights.sum()),
        bias=rng.normal(0.0, USER_SD, n_users),
        start=release.first_timestamp + rng.integers(0, span, n_users),
    )


def rating_counts(rng: np.random.Generator, n_users: int, total: int, cap: int) -> np.ndarray:
    """Ratings per user: at least `MIN_USER_RATINGS` (or an even share), at most `cap`."""
    base = min(MIN_USER_RATINGS, total // n_users)
    counts = np.full(n_users, base, dtype=np.int64)
    weights = rng.lognormal(0.0, 1.1, n_users)
    remaining = total - base * n_users
    while remaining > 0:
        room = cap - counts
        share = np.where(room > 0, weights, 0.0)
        extra = np.minimum(np.floor(remaining * share / share.sum()).astype(np.int64), room)
        if not extra.any():  # the last few: one each to the most active users with room
            extra[np.argsort(-share, kind="stable")[:remaining]] = 1
        counts += extra
        remaining -= int(extra.sum())
    return counts
