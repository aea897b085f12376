"""Temp files of a layout (or the store), kept out of `blobs/` and swept after a crash.

    <layout>/.pullbroker-tmp/.pull-XXXX.tmp     a blob or index.json being written

Temp files live beside `blobs/` (same file system, so the final rename is atomic), where
no OCI reader looks. Each is held under an exclusive `flock` from the moment it exists
until it is renamed or removed. The kernel drops a dead process's locks, even after
`kill -9`, so a temp file whose lock can be taken belongs to nobody: `sweep` (run when a
layout is opened) removes exactly those and never a live pull's. The folder is removed
again when the last temp file in it is gone, so a finished layout holds only OCI files.

Layouts written by earlier versions kept their temp files in `blobs/` and the layout root,
unlocked; `sweep` removes those too (an older sidecar still writing into the same layout
during an upgrade would lose its download and fail: it says so, and the next pull works).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from io import FileIO
from pathlib import Path

from pullbroker_sidecar.pull.blobfiles import real_dir

TEMP_DIR = ".pullbroker-tmp"
TEMP_PREFIX = ".pull-"
TEMP_SUFFIX = ".tmp"
_ATTEMPTS = 100  # each retry means another writer finished meanwhile


class TempArea:
    """The temp folder of one layout; `legacy` are folders older versions left temps in."""

    def __init__(self, root: Path, legacy: tuple[Path, ...] = ()) -> None:
        self.path = root / TEMP_DIR
        self._legacy = legacy

    def create(self) -> tuple[FileIO, Path]:
        """A new temp file, open for writing and locked for as long as it stays open."""
        for _ in range(_ATTEMPTS):
            try:
                real_dir(self.path)
                fd, name = tempfile.mkstemp(dir=self.path, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
            except FileNotFoundError:
                continue  # another writer tidied the folder away just now
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweep looks at it
            if _names(Path(name), fd):
                return os.fdopen(fd, "r+b", buffering=0), Path(name)
            os.close(fd)  # a sweep took it before our lock: it is gone, make another
        raise OSError(f"cannot create a temp file in {self.path}")

    def tidy(self) -> None:
        """Remove the folder when no temp file is left in it (another pull may still use it)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def sweep(self) -> int:
        """Remove temp files no live process holds (left by a crash); returns how many."""
        removed = 0
        for folder in (self.path, *self._legacy):
            try:
                names = [n for n in os.listdir(folder) if _is_temp(n)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            removed += sum(_remove_if_abandoned(folder / n) for n in names)
        self.tidy()
        return removed


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _names(path: Path, fd: int) -> bool:
    """True when `path` still names the file open on `fd`."""
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:  # a symlink (ELOOP) or something unreadable: not ours to keep
        return _unlink(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live pull is writing it
        if not _names(path, fd):
            return False
        return _unlink(path)  # under the lock: a writer that races us sees it gone
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:  # gone already, or a folder someone named like a temp file
        return False
    return True
