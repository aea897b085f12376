"""The audit file's rotation by size: <path> grows to `max_bytes`, then becomes <path>.1
(<path>.1 becomes <path>.2, and so on), and only `keep` rotated files are kept.

Several brokers on one host may append to one file (O_APPEND): rotation happens under an
exclusive flock on the file, and only if <path> is still the file this broker has open
(another broker may have rotated it a moment ago); a broker whose open file was rotated
away reopens <path> before its next write.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from pathlib import Path


def open_append(path: Path) -> int:
    """<path> opened for appending, created 0600 in a 0700 folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # an existing file made readable by someone else is closed again
    return fd


def replaced(fd: int, path: Path) -> bool:
    """True when <path> is no longer the file `fd` has open (rotated by another broker)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    mine = os.fstat(fd)
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev)


def rotate_if_full(fd: int, path: Path, max_bytes: int, keep: int) -> int:
    """The descriptor to write to next: `fd`, or a fresh <path> after rotating a full one.
    `max_bytes` 0 never rotates."""
    if max_bytes <= 0 or os.fstat(fd).st_size < max_bytes:
        return fd
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        if not replaced(fd, path):
            _shift(path, keep)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return open_append(path)


def rotated_files(path: Path, keep: int) -> list[Path]:
    """<path>.1 ... <path>.<keep>, newest first."""
    return [path.with_name(f"{path.name}.{n}") for n in range(1, keep + 1)]


def _shift(path: Path, keep: int) -> None:
    older = rotated_files(path, keep + 1)
    with suppress(FileNotFoundError):
        older[-1].unlink()  # the one past `keep`
    for n in range(len(older) - 1, 0, -1):
        with suppress(FileNotFoundError):
            os.replace(older[n - 1], older[n])
    if keep > 0:
        os.replace(path, older[0])
    else:
        path.unlink()
    with suppress(FileNotFoundError):
        older[-1].unlink()
