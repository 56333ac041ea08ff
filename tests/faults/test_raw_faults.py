"""Malformed release files, served with a matching checksum: the error names the file
and line (or column), and nothing is written downstream (data/raw/ stays as it was)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from deepfm.data.sources import DownloadError, GroupLensSource, download
from local_server import Server
from movielens_fixtures import make_ml100k, release_files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_release(files: dict[str, bytes]) -> bytes:
    """A GroupLens-shaped ml-100k.zip holding `files` under `ml-100k/`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"ml-100k/{name}", data)
    return buffer.getvalue()


def line(number: int, text: bytes) -> Callable[[bytes], bytes]:
    """An edit that replaces line `number` (1-based) of a file."""

    def edit(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[number - 1] = text
        return b"\n".join(lines)

    return edit


def drop_last_field(data: bytes) -> bytes:
    return b"\n".join(row.rsplit(b"|", 1)[0] for row in data.split(b"\n") if row) + b"\n"


FAULTS = {
    "too few fields": ("u.data", line(5, b"1\t2\t3"), "u.data line 5: expected 4 fields, got 3"),
    "non-numeric id": (
        "u.data",
        line(7, b"abc\t2\t3\t880000000"),
        "u.data line 7, column 1 (user_id): 'abc'",
    ),
    "rating of 7": (
        "u.data",
        line(9, b"1\t2\t7\t880000000"),
        "u.data line 9: rating 7.0 is outside",
    ),
    "empty ratings file": ("u.data", lambda data: b"", "u.data: file is empty"),
    "users file missing a column": (
        "u.user",
        drop_last_field,
        "u.user line 1: expected 5 fields, got 4",
    ),
    "movie id absent from items": (
        "u.data",
        line(12, b"1\t999\t3\t880000000"),
        "u.data line 12: movie_id 999 not in u.item",
    ),
    "non-UTF-8 bytes": (
        "u.user",
        line(6, b"6|30|M|oth\xe9r|12345"),
        "u.user line 6: not valid UTF-8 (byte 0xe9",
    ),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_release_file_is_named_and_nothing_is_written(
    fault: str, server: Server, tmp_path: Path
):
    name, edit, message = FAULTS[fault]
    raw_root = tmp_path / "raw"
    files = release_files(make_ml100k())
    good = zip_release(files)
    folder = download(
        "ml-100k",
        raw_root,
        [GroupLensSource(server.serve("/v1/ml-100k.zip", good), len(good), sha256(good))],
    )
    before = snapshot(folder)
    bad = zip_release(files | {name: edit(files[name])})
    source = GroupLensSource(server.serve("/v2/ml-100k.zip", bad), len(bad), sha256(bad))

    with pytest.raises(DownloadError) as err:
        download("ml-100k", raw_root, [source])

    assert f"  - {source}: {message}" in str(err.value)
    assert snapshot(folder) == before
    assert [path.name for path in raw_root.iterdir()] == ["ml-100k"]
