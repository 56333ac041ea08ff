"""`download` under faults from a real server on 127.0.0.1: each failure names its source
and cause and leaves no partial data/raw/; the next source, or a later run, succeeds."""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepfm.data.raw import read_raw
from deepfm.data.releases.ml100k import parse_ml100k
from deepfm.data.sources import DownloadError, GroupLensSource, download
from local_server import Server
from movielens_fixtures import build_ml100k_zip, write_ml100k_folder

PARENT_MEMBER = "ml-100k/../../evil.txt"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source(
    server: Server, path: str, body: bytes, expected: bytes, **serve: object
) -> GroupLensSource:
    """A GroupLens-like source at `path` that serves `body` and expects `expected`."""
    return GroupLensSource(server.serve(path, body, **serve), len(expected), sha256(expected))


def flip_one_byte(data: bytes) -> bytes:
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    return bytes(corrupt)


def with_parent_member(server: Server, release: bytes, tmp_path: Path) -> GroupLensSource:
    """The release zip plus a member whose path climbs out of the extraction folder, with
    a matching checksum: extraction itself must refuse it."""
    path = tmp_path / "evil.zip"
    path.write_bytes(release)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(PARENT_MEMBER, b"written outside the extraction folder")
    return source(server, "/bad/ml-100k.zip", path.read_bytes(), path.read_bytes())


@dataclass(frozen=True)
class Fault:
    name: str
    cause: str  # a pattern for what the error says after the source's label
    make: Callable[[Server, bytes, Path], GroupLensSource]


FAULTS = [
    Fault(
        "server closes midway",
        r"connection broken after \d+ of \d+ bytes|size mismatch: received \d+ bytes",
        lambda server, release, _: source(
            server, "/bad/ml-100k.zip", release, release, truncate=True
        ),
    ),
    Fault(
        "HTTP 404",
        "HTTP 404",
        lambda server, release, _: source(server, "/bad/ml-100k.zip", b"", release, status=404),
    ),
    Fault(
        "HTTP 500",
        "HTTP 500",
        lambda server, release, _: source(server, "/bad/ml-100k.zip", b"", release, status=500),
    ),
    Fault(
        "one flipped byte",
        "checksum mismatch for ml-100k.zip",
        lambda server, release, _: source(
            server, "/bad/ml-100k.zip", flip_one_byte(release), release
        ),
    ),
    Fault(
        "a ../ member",
        re.escape(f"unsafe zip member {PARENT_MEMBER!r}: '..' in path"),
        with_parent_member,
    ),
]


@pytest.fixture
def release_zip(tmp_path: Path) -> bytes:
    return build_ml100k_zip(tmp_path / "ml-100k.zip").read_bytes()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.name)
def test_download_fault_is_named_leaves_nothing_and_the_next_source_serves(
    fault: Fault, server: Server, release_zip: bytes, tmp_path: Path, caplog
):
    raw_root = tmp_path / "raw"
    bad = fault.make(server, release_zip, tmp_path)
    good = source(server, "/good/ml-100k.zip", release_zip, release_zip)
    expected = parse_ml100k(write_ml100k_folder(tmp_path / "u")).fingerprint()

    # Alone: an error naming the source and the cause, and nothing under data/raw/.
    with pytest.raises(DownloadError) as err:
        download("ml-100k", raw_root, [bad])
    assert re.search(rf"^  - {re.escape(str(bad))}: (?:{fault.cause})", str(err.value), re.M)
    assert list(raw_root.iterdir()) == []

    # Then, before a good source: the good one is tried next and serves the release.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        folder = download("ml-100k", raw_root, [bad, good])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(bad) in warnings[0] and re.search(fault.cause, warnings[0])
    assert read_raw(folder).fingerprint() == expected
    before = snapshot(folder)

    # A later failing run leaves what is there as it was.
    with pytest.raises(DownloadError):
        download("ml-100k", raw_root, [bad])
    assert snapshot(folder) == before
    assert [path.name for path in raw_root.iterdir()] == ["ml-100k"]
    assert list(tmp_path.rglob("evil.txt")) == []


@pytest.mark.slow
def test_download_killed_mid_swap_keeps_the_old_data_for_an_offline_rerun(
    server: Server, release_zip: bytes, tmp_path: Path, stop_at
):
    """SIGKILL between the two renames that swap the new raw folder in: the old folder
    is aside in a temp folder; the next run, even one that fails, puts it back."""
    raw_root = tmp_path / "raw"
    older = build_ml100k_zip(tmp_path / "older.zip", seed=1).read_bytes()
    folder = download("ml-100k", raw_root, [source(server, "/v1/ml-100k.zip", older, older)])
    before = snapshot(folder)
    newer = source(server, "/v2/ml-100k.zip", release_zip, release_zip)
    script = tmp_path / "download.py"
    script.write_text(
        "from pathlib import Path\n"
        "from deepfm.data.sources import GroupLensSource, download\n"
        f"source = GroupLensSource({newer.url!r}, {newer.size}, {newer.sha256!r})\n"
        f"download('ml-100k', Path({str(raw_root)!r}), [source])\n"
    )

    stop_at(tmp_path, "folder-swap:ml-100k", str(script)).kill()

    assert not folder.exists()
    offline = source(server, "/gone/ml-100k.zip", b"", release_zip, status=404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("ml-100k", raw_root, [offline])
    assert snapshot(folder) == before
    assert [path.name for path in raw_root.iterdir()] == ["ml-100k"]
