"""Synthetic MovieLens releases in each release's exact file layout, for tests and benchmarks.

    python -m deepfm.data.synthetic --release ml-25m --ratings 25000000 --out DIR

writes `DIR/ml-25m.zip` (with `--folder`, the folder `DIR/ml-25m/`) holding what the
real archive holds under its top folder: the same file names, separators, encodings,
header lines and quoting, so `deepfm.data.releases` parses it as it would the real one.
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

The package: `population.py` makes movies and users, `ratings.py` the ratings
file, `files.py` every other file; this module writes them into the zip or folder.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deepfm import atomic
from deepfm.data.synthetic.files import release_files
from deepfm.data.synthetic.population import RELEASES, make_movies, make_users, sizes, user_cap
from deepfm.data.synthetic.ratings import rating_chunks

logger = logging.getLogger(__name__)


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
