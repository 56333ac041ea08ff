"""The synthetic ratings file: distinct (user, movie) pairs with a planted signal.

Ratings are made a chunk of users at a time (about `CHUNK_RATINGS` ratings), each
chunk from its own seeded generator, so memory stays bounded and the bytes do not
depend on the chunking. A rating's latent score is movie quality + user bias + the
user's mean affinity for the movie's genres (partly shared by users of the same
gender and age group) + noise, cut into stars at the quantiles of the release's
star distribution.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from deepfm.data.synthetic.population import (
    GROUP_AFFINITY_SD,
    ML1M_AGE_GROUPS,
    NOISE_SD,
    OWN_AFFINITY_SD,
    QUALITY_SD,
    USER_SD,
    Movies,
    Release,
    Users,
)

CHUNK_RATINGS = 1_000_000  # ratings generated and written at a time
DAY_S = 86_400
WHOLE_STAR_SHARES = (0.06, 0.11, 0.27, 0.34, 0.22)  # 1..5 stars, ml-100k and ml-1m
HALF_STAR_SHARES = (0.016, 0.031, 0.016, 0.066, 0.05, 0.196, 0.126, 0.266, 0.085, 0.145)


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
