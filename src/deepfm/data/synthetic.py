"""Synthetic MovieLens releases in each release's exact file layout, for tests and benchmarks.

    python -m deepfm.data.synthetic --release ml-25m --ratings 25000000 --out DIR

writes `DIR/ml-25m.zip` (with `--folder`, the folder `DIR/ml-25m/`) holding what the
real archive holds under its top folder: the same file names, separators, encodings,
header lines and quoting, so `deepfm.data.raw` parses it as it would the real one.
ml-100k gets `u.data`, `u.user`, `u.item`, `u.genre`, `u.occupation`, `u.info` and a
README (not its prepared splits or scripts); ml-1m `ratings.dat`, `users.dat`,
`movies.dat` and a README; the CSV releases `ratings.csv`, `movies.csv`, `links.csv`,
`tags.csv` (small), the genome files for ml-20m and ml-25m (small) and `README.txt`.

The content is random but shaped like the release:

- users and movies scale with the rating count (users linearly, movies with its
  square root), reaching the real release's counts at its real size;
- every user rates at least 20 movies (fewer only when there are too few ratings),
  activity is heavy-tailed, movie popularity Zipf-like, and no user rates a movie twice;
- 1 to 6 genres per movie (10 for the CSV releases), weighted as in ml-25m; the CSV
  releases have movies with `(no genres listed)` and titles without a year;
- ratings follow the release's star distribution (half stars for the CSV releases).

A planted signal makes ratings predictable: latent score = movie quality (correlated
with popularity) + user bias + the user's affinity for the movie's genres (partly
shared by users of the same gender and age group) + noise, cut into stars at the
quantiles of the release's rating distribution.

The same arguments give byte-identical output. Ratings are made and written in
chunks of users, so memory stays bounded whatever `--ratings` is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from deepfm import atomic

logger = logging.getLogger(__name__)

CHUNK_RATINGS = 1_000_000  # ratings generated and written at a time
MIN_USER_RATINGS = 20  # every MovieLens release keeps only users with at least 20
MIN_USERS, MIN_MOVIES = 10, 20
MAX_USER_SHARE = 0.5  # a user rates at most this share of the movies
DAY_S = 86_400

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
WHOLE_STAR_SHARES = (0.06, 0.11, 0.27, 0.34, 0.22)  # 1..5 stars, ml-100k and ml-1m
HALF_STAR_SHARES = (0.016, 0.031, 0.016, 0.066, 0.05, 0.196, 0.126, 0.266, 0.085, 0.145)

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
    """What the generator needs to know about one real release."""

    name: str
    ratings: int  # the real release's counts
    users: int
    movies: int  # movies in its movies file
    first_timestamp: int
    last_timestamp: int
    last_year: int  # newest release year among its movies
    movie_id_gap: float  # mean step between consecutive movie ids
    max_genres: int
    no_genres_share: float  # movies with "(no genres listed)" (CSV releases)
    no_year_share: float  # titles without a year (CSV releases)

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
    """The movies file's content, and each movie's part of the signal."""

    ids: np.ndarray  # int64, increasing
    titles: pd.Series  # str, the year in parentheses when the movie has one
    years: np.ndarray  # int64; 0 when the title has none
    genre_names: tuple[str, ...]
    genres: np.ndarray  # (movies, genres) bool
    popularity_cdf: np.ndarray  # cumulative probability of being rated, in movie order
    quality: np.ndarray  # mean 0, variance 1 over the ratings

    @property
    def genre_lists(self) -> pa.ListArray:
        """Each movie's genre names, in genre order (alphabetical, as the releases list them)."""
        movie, genre = np.nonzero(self.genres)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(movie, minlength=len(self.ids)))])
        names = pa.array(np.asarray(self.genre_names, dtype=object)[genre], pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), names)


@dataclass(frozen=True)
class Users:
    """Users 1..n: rating counts, demographics and each user's part of the signal."""

    counts: np.ndarray  # ratings per user
    female: np.ndarray  # bool
    age_group: np.ndarray  # index into ML1M_AGE_GROUPS
    bias: np.ndarray
    start: np.ndarray  # int64 Unix seconds of the first rating

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


def generate(
    release_name: str, ratings: int, out: Path, seed: int = 0, folder: bool = False
) -> Path:
    """Write the synthetic release into folder `out`, as `<release>.zip` or `<release>/`."""
    if release_name not in RELEASES:
        raise ValueError(f"unknown release {release_name!r}; choose from {list(RELEASES)}")
    if ratings < 1:
        raise ValueError(f"ratings must be >= 1, got {ratings}")
    release = RELEASES[release_name]
    n_users, n_movies = sizes(release, ratings)
    logger.info(
        "%s: %d ratings, %d users, %d movies, seed %d",
        release.name,
        ratings,
        n_users,
        n_movies,
        seed,
    )
    rng = np.random.default_rng([seed, 0])
    movies = make_movies(rng, release, n_movies)
    users = make_users(rng, release, n_users, ratings, user_cap(n_movies))
    files = release_files(rng, release, movies, users, ratings)
    target = out / (release.name if folder else f"{release.name}.zip")
    with _output(target, release.name, folder) as open_member:
        for name, data in files.items():
            with open_member(name) as handle:
                handle.write(data)
        with open_member(RATINGS_FILES[release.name]) as handle:
            for chunk in rating_chunks(release, movies, users, seed):
                handle.write(chunk)
    logger.info("wrote %s", target)
    return target


RATINGS_FILES = {
    "ml-100k": "u.data",
    "ml-1m": "ratings.dat",
    "ml-20m": "ratings.csv",
    "ml-25m": "ratings.csv",
    "ml-latest-small": "ratings.csv",
}


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


def rating_chunks(release: Release, movies: Movies, users: Users, seed: int) -> Iterator[bytes]:
    """The ratings file's bytes (header included), a chunk of users at a time."""
    if release.csv:
        yield b"userId,movieId,rating,timestamp\n"
    shares = np.array(HALF_STAR_SHARES if release.csv else WHOLE_STAR_SHARES)
    cuts = [NormalDist().inv_cdf(p) for p in np.cumsum(shares / shares.sum())[:-1]]
    labels = pa.array(
        [f"{(i + 1) / 2:.1f}" for i in range(10)] if release.csv else ["1", "2", "3", "4", "5"]
    )
    options = pacsv.WriteOptions(
        include_header=False, delimiter="," if release.csv else "\t", quoting_style="none"
    )
    group_affinity = np.random.default_rng([seed, 1, 0]).normal(
        0.0, GROUP_AFFINITY_SD, (2 * len(ML1M_AGE_GROUPS), len(movies.genre_names))
    )
    chunks = _user_chunks(users.counts)
    for index, (first, stop) in enumerate(tqdm(chunks, desc=release.name, unit="chunk")):
        rng = np.random.default_rng([seed, 1, index + 1])  # the same whatever came before
        user, movie = sample_pairs(rng, users.counts[first:stop], movies.popularity_cdf)
        affinity = group_affinity[users.group[first:stop]] + rng.normal(
            0.0, OWN_AFFINITY_SD, (stop - first, len(movies.genre_names))
        )
        score = latent_scores(rng, movies, users, affinity, user, movie, first)
        delay = (rng.exponential(90.0, len(user)) * DAY_S).astype(np.int64)
        timestamp = np.minimum(users.start[first + user] + delay, release.last_timestamp)
        table = pa.table(
            {
                "user": pa.array((first + user + 1).astype(np.int32)),
                "movie": pa.array(movies.ids[movie].astype(np.int32)),
                "rating": labels.take(pa.array(np.searchsorted(cuts, score))),
                "timestamp": pa.array(timestamp),
            }
        )
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, options)
        text = buffer.getvalue()
        yield text.replace(b"\t", b"::") if release.name == "ml-1m" else text


def _user_chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive user ranges of about `CHUNK_RATINGS` ratings each."""
    ends = np.cumsum(counts)
    bounds = [0]
    while bounds[-1] < len(counts):
        done = int(ends[bounds[-1] - 1]) if bounds[-1] else 0
        stop = int(np.searchsorted(ends, done + CHUNK_RATINGS, side="right"))
        bounds.append(max(stop, bounds[-1] + 1))
    return list(itertools.pairwise(bounds))


def sample_pairs(
    rng: np.random.Generator, counts: np.ndarray, popularity_cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, movie) pairs, `counts[u]` for user u, sorted by user then movie.

    Movies are drawn by popularity; a draw that repeats a pair is drawn again, more
    and more uniformly, so that even the most active users end with distinct movies.
    """
    n_movies = len(popularity_cdf)
    keys = np.empty(0, dtype=np.int64)  # user * n_movies + movie, sorted
    need, attempt = counts, 0
    while need.any():
        user = np.repeat(np.arange(len(counts), dtype=np.int64), need)
        draws = rng.random(len(user)) * popularity_cdf[-1]
        movie = np.minimum(np.searchsorted(popularity_cdf, draws, side="right"), n_movies - 1)
        uniform = rng.random(len(user)) < min(1.0, attempt / 4)
        movie[uniform] = rng.integers(0, n_movies, int(uniform.sum()))
        keys = _merge(keys, user * n_movies + movie)
        need = counts - np.bincount(keys // n_movies, minlength=len(counts))
        attempt += 1
    return keys // n_movies, keys % n_movies


def _merge(keys: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Sorted, distinct `keys` plus the `candidates` not yet in them, still sorted."""
    candidates = np.sort(candidates)
    fresh = np.concatenate([[True], candidates[1:] != candidates[:-1]])
    if len(keys):
        fresh &= keys[np.minimum(np.searchsorted(keys, candidates), len(keys) - 1)] != candidates
    new = candidates[fresh]
    return np.insert(keys, np.searchsorted(keys, new), new)


def latent_scores(
    rng: np.random.Generator,
    movies: Movies,
    users: Users,
    affinity: np.ndarray,
    user: np.ndarray,
    movie: np.ndarray,
    first_user: int,
) -> np.ndarray:
    """Standard-normal scores: quality + bias + mean genre affinity + noise, rescaled.

    `affinity` is (chunk users, genres); `user` indexes it, `first_user + user` the users.
    """
    movie_of, genre_of = np.nonzero(movies.genres)  # (movie, genre) pairs by movie
    offsets = np.concatenate([[0], np.cumsum(np.bincount(movie_of, minlength=len(movies.ids)))])
    lengths = np.diff(offsets)[movie]
    rating_of_pair = np.repeat(np.arange(len(movie)), lengths)
    pair_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.repeat(offsets[:-1][movie] - pair_starts, lengths) + np.arange(lengths.sum())
    summed = np.bincount(
        rating_of_pair,
        weights=affinity[user[rating_of_pair], genre_of[position]],
        minlength=len(movie),
    )
    genre_count = np.maximum(lengths, 1)
    affinity_var = np.where(lengths > 0, GROUP_AFFINITY_SD**2 + OWN_AFFINITY_SD**2, 0.0)
    score = (
        QUALITY_SD * movies.quality[movie]
        + users.bias[first_user + user]
        + summed / genre_count
        + rng.normal(0.0, NOISE_SD, len(movie))
    )
    variance = QUALITY_SD**2 + USER_SD**2 + affinity_var / genre_count + NOISE_SD**2
    return score / np.sqrt(variance)


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


@contextlib.contextmanager
def _output(target: Path, top: str, folder: bool) -> Iterator[Callable[[str], BinaryIO]]:
    """Yield `open_member(name)`: a binary file for `<top>/<name>` in a zip, or in a folder.

    The zip or folder appears at `target` only when complete.
    """
    if folder:
        with atomic.replace_dir(target) as tmp:
            yield lambda name: (tmp / name).open("wb")
        return
    # Members get ZipInfo's fixed date (1980-01-01) and mode, so the bytes are reproducible.
    with (
        atomic.open_for_write(target) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        archive.mkdir(top)
        yield lambda name: archive.open(f"{top}/{name}", "w", force_zip64=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deepfm.data.synthetic",
        description="Write a synthetic MovieLens release in its exact file layout.",
    )
    parser.add_argument("--release", required=True, choices=list(RELEASES))
    parser.add_argument(
        "--ratings", type=int, help="number of ratings (default: as many as the real release)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write <release>.zip into"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--folder", action="store_true", help="write the folder <release>/ instead of a zip"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ratings = args.ratings if args.ratings is not None else RELEASES[args.release].ratings
    try:
        generate(args.release, ratings, args.out, args.seed, args.folder)
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
