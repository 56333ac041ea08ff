"""The synthetic release generator: real layouts, determinism, scale and a planted signal."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepfm.data import synthetic
from deepfm.data.releases import parse_release
from deepfm.data.synthetic import population
from deepfm.data.synthetic.ratings import WHOLE_STAR_SHARES

MEMBERS = {
    "ml-100k": ["README", "u.data", "u.genre", "u.info", "u.item", "u.occupation", "u.user"],
    "ml-1m": ["README", "movies.dat", "ratings.dat", "users.dat"],
    "ml-20m": [
        "README.txt",
        "genome-scores.csv",
        "genome-tags.csv",
        "links.csv",
        "movies.csv",
        "ratings.csv",
        "tags.csv",
    ],
    "ml-latest-small": ["README.txt", "links.csv", "movies.csv", "ratings.csv", "tags.csv"],
}
MEMBERS["ml-25m"] = MEMBERS["ml-20m"]


@pytest.mark.parametrize("release", list(synthetic.RELEASES))
def test_zip_has_the_release_layout(tmp_path: Path, release: str) -> None:
    archive = synthetic.generate(release, 1500, tmp_path)

    assert archive == tmp_path / f"{release}.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert names[0] == f"{release}/"
        assert sorted(names[1:]) == [f"{release}/{name}" for name in MEMBERS[release]]
        first_lines = {name.split("/")[1]: zf.read(name).split(b"\n", 1)[0] for name in names[1:]}
    if release == "ml-100k":
        assert first_lines["u.data"].count(b"\t") == 3
        assert first_lines["u.user"].count(b"|") == 4
        assert first_lines["u.item"].count(b"|") == 4 + len(population.GENRES["ml-100k"])
        assert first_lines["u.genre"] == b"unknown|0"
    elif release == "ml-1m":
        assert first_lines["ratings.dat"].count(b"::") == 3
        assert first_lines["users.dat"].count(b"::") == 4
        assert first_lines["movies.dat"].startswith("1::Misérables, Les (".encode("latin-1"))
    else:
        assert first_lines["ratings.csv"] == b"userId,movieId,rating,timestamp"
        assert first_lines["movies.csv"] == b"movieId,title,genres"
        assert first_lines["links.csv"] == b"movieId,imdbId,tmdbId"
        assert first_lines["tags.csv"] == b"userId,movieId,tag,timestamp"


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    first = synthetic.generate("ml-1m", 3000, tmp_path / "a", seed=3).read_bytes()
    again = synthetic.generate("ml-1m", 3000, tmp_path / "b", seed=3).read_bytes()
    other = synthetic.generate("ml-1m", 3000, tmp_path / "c", seed=4).read_bytes()

    assert first == again
    assert first != other


def test_folder_holds_the_zip_members(tmp_path: Path) -> None:
    folder = synthetic.generate("ml-latest-small", 2000, tmp_path, folder=True)
    archive = synthetic.generate("ml-latest-small", 2000, tmp_path)

    assert folder == tmp_path / "ml-latest-small"
    with zipfile.ZipFile(archive) as zf:
        for name in MEMBERS["ml-latest-small"]:
            assert (folder / name).read_bytes() == zf.read(f"ml-latest-small/{name}")


def test_chunks_do_not_change_the_ratings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk bounds follow users, so many small chunks still give every user its count."""
    monkeypatch.setattr("deepfm.data.synthetic.ratings.CHUNK_RATINGS", 700)
    raw = parse_release("ml-25m", synthetic.generate("ml-25m", 5000, tmp_path, folder=True))

    users, movies = synthetic.sizes(synthetic.RELEASES["ml-25m"], 5000)
    assert raw.rows()["ratings"] == 5000
    assert raw.rows()["users"] == users
    assert raw.rows()["items"] == movies


@pytest.mark.parametrize(
    ("release", "ratings", "users", "movies"),
    [
        ("ml-25m", 25_000_095, 162_541, 62_423),  # the real release's counts
        ("ml-1m", 1_000_209, 6_040, 3_883),
        ("ml-25m", 1_000_000, 6_502, 12_485),  # users linear, movies with the square root
        ("ml-100k", 10, 10, 20),  # the floor
    ],
)
def test_sizes_scale_like_the_release(release: str, ratings: int, users: int, movies: int) -> None:
    assert synthetic.sizes(synthetic.RELEASES[release], ratings) == (users, movies)


def test_ratings_look_like_movielens(tmp_path: Path) -> None:
    raw = parse_release("ml-1m", synthetic.generate("ml-1m", 40_000, tmp_path, folder=True))
    users = raw.ratings["user_id"].to_numpy()
    movies = raw.ratings["movie_id"].to_numpy()
    ratings = raw.ratings["rating"].to_numpy()

    assert np.bincount(users)[1:].min() >= population.MIN_USER_RATINGS
    assert len(np.unique(users.astype(np.int64) * 10**6 + movies)) == len(users)
    per_movie = np.sort(np.unique(movies, return_counts=True)[1])[::-1]
    assert per_movie[:10].sum() > 5 * per_movie[-10:].sum()  # popular and rare movies
    shares = np.bincount(ratings.astype(int), minlength=6)[1:] / len(ratings)
    np.testing.assert_allclose(shares, WHOLE_STAR_SHARES, atol=0.04)
    genre_counts = np.array([len(genres) for genres in raw.items["genres"].to_pylist()])
    assert genre_counts.min() >= 1 and genre_counts.max() <= 6
    assert 1.5 < genre_counts.mean() < 2.5


def test_user_activity_is_heavy_tailed_like_ml1m() -> None:
    """At ml-1m's size: mean 165.6 and median 96 ratings per user in the real release."""
    users, movies = synthetic.sizes(synthetic.RELEASES["ml-1m"], 1_000_209)
    cap = synthetic.user_cap(movies)
    counts = population.rating_counts(np.random.default_rng(0), users, 1_000_209, cap)

    assert counts.sum() == 1_000_209
    assert counts.min() >= population.MIN_USER_RATINGS and counts.max() <= cap
    assert 80 < np.median(counts) < 120
    assert counts.max() > 10 * np.median(counts)


@pytest.mark.parametrize("release", ["ml-1m", "ml-latest-small"])
def test_planted_signal_beats_chance(tmp_path: Path, release: str) -> None:
    """User and movie mean labels from 80% of the ratings rank the other 20% well."""
    raw = parse_release(release, synthetic.generate(release, 30_000, tmp_path, folder=True))
    label = (raw.ratings["rating"].to_numpy() >= 4).astype(float)
    held_out = np.random.default_rng(0).random(len(label)) < 0.2
    score = np.zeros(len(label))
    for column in ("user_id", "movie_id"):
        _, key = np.unique(raw.ratings[column].to_numpy(), return_inverse=True)
        positives = np.bincount(key[~held_out], weights=label[~held_out], minlength=key.max() + 1)
        seen = np.bincount(key[~held_out], minlength=key.max() + 1)
        score += ((positives + 5 * label.mean()) / (seen + 5))[key]

    assert roc_auc_score(label[held_out], score[held_out]) > 0.7


def test_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "deepfm.data.synthetic", "--release", "ml-latest-small"]
    done = subprocess.run(
        [*command, "--ratings", "500", "--out", str(tmp_path)], capture_output=True, text=True
    )
    refused = subprocess.run(
        [*command, "--ratings", "0", "--out", str(tmp_path / "x")], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ml-latest-small.zip").is_file()
    assert refused.returncode == 2
    assert "ratings must be >= 1, got 0" in refused.stderr
    assert not (tmp_path / "x").exists()
