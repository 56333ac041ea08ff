"""Atomic file and folder writes: readers see the old content or the new, never a part.

Everything is written to a temporary name in the target's own folder (same file
system), flushed, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with open_for_write(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def open_for_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replace_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; on success it replaces `path` whole.

    On any error the temp folder is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: Path) -> None:
    """Remove temp files and folders an interrupted (killed) write left in `folder`.

    A `replace_dir` killed between its two renames left `<name>` missing and the old
    folder inside `.tmp-<name>.old.*`: that folder is put back first, not removed.
    """
    for old in folder.glob(f"{TEMP_PREFIX}*.old.*"):
        for kept in old.iterdir() if old.is_dir() else ():
            if not (folder / kept.name).exists():
                os.replace(kept, folder / kept.name)
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
