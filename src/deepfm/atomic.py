"""Atomic file and folder writes: readers see the old content or the new, never a part.

Everything is written inside a temp folder `.tmp-<name>.<random>/` beside the target
(same file system), flushed, then renamed over the target. Each such folder holds the
marker file `.deepfm-temp`, locked (`flock`) by the process that made it for as long as
it lives; a temp folder is only ever removed when it has that marker and no process
holds the lock, so entries this project did not make, and those of writes still
running, are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"
MARKER = ".deepfm-temp"
# What a marker says its folder holds: work files, or a folder moved aside by a swap.
WORK, OLD = "work", "old"


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with open_for_write(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def temp_dir(parent: Path, name: str) -> Iterator[Path]:
    """Yield a new marked temp folder `.tmp-<name>.*` in `parent`; it is removed after."""
    with _marked_dir(parent, name, WORK) as folder:
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def open_for_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path for `path`; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    with temp_dir(path.parent, path.name) as folder:
        tmp = folder / path.name
        tmp.touch()  # the usual file mode (0666 less the umask)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def replace_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder for `path`; on success it replaces `path` whole.

    On any error the temp folder is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    with temp_dir(path.parent, path.name) as folder:
        new = folder / path.name
        new.mkdir()
        yield new
        if not path.exists():
            os.replace(new, path)
            return
        # Killed between these two renames, the old folder waits in `aside` (marked OLD);
        # the next write in this folder puts it back.
        with _marked_dir(path.parent, f"{path.name}.old", OLD) as aside:
            os.replace(path, aside / path.name)
            os.replace(new, path)
            shutil.rmtree(aside)


def remove_stale_temps(folder: Path) -> None:
    """Remove the temp folders of this project's writes in `folder` that were killed.

    Only `.tmp-*` folders with an unlocked marker are touched. A `replace_dir` killed
    between its two renames left `<name>` missing and the old folder in an OLD temp
    folder: it is put back first, not removed.
    """
    for temp in folder.glob(f"{TEMP_PREFIX}*"):
        with _claim_if_stale(temp) as purpose:
            if purpose == OLD:
                for kept in temp.iterdir():
                    if kept.name != MARKER and not (folder / kept.name).exists():
                        os.replace(kept, folder / kept.name)
            if purpose is not None:
                shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _marked_dir(parent: Path, name: str, purpose: str) -> Iterator[Path]:
    """Make `.tmp-<name>.*` in `parent` with a marker saying `purpose`, locked while in use.

    The folder itself is the caller's to remove (a swap's OLD folder must outlive a crash).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}.", dir=parent))
    try:
        marker = open(folder / MARKER, "w")  # noqa: SIM115 (the lock lives as long as it is open)
    except OSError:
        folder.rmdir()
        raise
    with marker:
        fcntl.flock(marker, fcntl.LOCK_EX)  # before the purpose is written: never claimable
        try:
            marker.write(purpose)
            marker.flush()
        except OSError:  # a full disk, say
            shutil.rmtree(folder, ignore_errors=True)
            raise
        yield folder


@contextlib.contextmanager
def _claim_if_stale(temp: Path) -> Iterator[str | None]:
    """Yield the purpose of project temp folder `temp`, locked, if its writer has ended;
    None for anything else (not a folder, no marker, a writer still running)."""
    marker = temp / MARKER
    if temp.is_symlink() or not marker.is_file() or marker.is_symlink():
        yield None
        return
    with open(marker, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        purpose = handle.read()
        yield purpose if purpose in (WORK, OLD) else None
