"""File primitives for layouts and the store: no symlink is ever followed, nothing trusted unseen.

Blob files are opened with `O_NOFOLLOW | O_NONBLOCK` and used only when `fstat` says they
are regular files: a symlink planted at a digest name fails with ELOOP instead of reading
(or, worse, truncating) whatever it points at, and a FIFO cannot block the pull. The
folders above them (`blobs/`, `blobs/sha256/`, the store's own) are checked with `lstat`
when they are opened, so a symlinked `blobs/` is refused rather than written through.

Copies go through `os.copy_file_range`: the kernel moves the bytes without a trip through
user space, and on file systems that can share extents (XFS, btrfs, bcachefs) it makes a
reflink, a copy-on-write clone that costs no space and cannot be written through. It is
never a hard link: a destination must not share a writable inode with the store.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from pullbroker_sidecar.errors import LayoutError
from pullbroker_sidecar.pull.manifest import Descriptor

READ_ONLY = 0o444
_CHUNK = 1 << 20
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# copy_file_range refuses these between some file systems (or kernels): copy by hand then.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})


def open_regular(path: Path) -> int | None:
    """A read-only fd on the regular file at `path`; None for nothing, a symlink or a non-file."""
    try:
        fd = os.open(path, _OPEN)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: never followed
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def hashes_to(fd: int, descriptor: Descriptor) -> bool:
    """True when the file behind `fd` has the descriptor's size and hashes to its digest."""
    if os.fstat(fd).st_size != descriptor.size:
        return False
    algorithm, _, expected = descriptor.digest.partition(":")
    digest = hashlib.new(algorithm)
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return offset == descriptor.size and digest.hexdigest() == expected


def verified(path: Path, descriptor: Descriptor) -> bool:
    """True when `path` is a regular file (not a symlink) holding exactly the blob."""
    fd = open_regular(path)
    if fd is None:
        return False
    try:
        return hashes_to(fd, descriptor)
    finally:
        os.close(fd)


def copy_fd(source: int, target: int, size: int) -> None:
    """Copy `size` bytes from the start of `source` into `target` (a reflink where possible)."""
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(source, target, size - copied, copied, copied)
            if n == 0:
                break
            copied += n
    except OSError as exc:
        if copied or exc.errno not in _NO_COPY_RANGE:
            raise
    while copied < size and (chunk := os.pread(source, min(_CHUNK, size - copied), copied)):
        copied += os.pwrite(target, chunk, copied)
    if copied != size:
        raise LayoutError(f"a blob file shrank while it was copied ({copied} of {size} bytes)")


def real_dir(path: Path) -> Path:
    """Create `path` (0700) if missing; LayoutError when it is a symlink or not a folder."""
    with contextlib.suppress(FileExistsError):  # a file or a dangling symlink: see lstat
        path.mkdir(mode=0o700, exist_ok=True)
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise LayoutError(f"{path} is a symbolic link; refusing to follow it: remove it")
    if not stat.S_ISDIR(mode):
        raise LayoutError(f"{path} is not a folder: remove it")
    return path


def read_small(path: Path, limit: int) -> bytes | None:
    """The bytes of a small regular file (None when missing); never through a symlink."""
    fd = open_regular(path)
    if fd is None:
        if os.path.lexists(path):
            raise LayoutError(f"{path} is a symbolic link or not a file: remove it")
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise LayoutError(f"{path} is larger than {limit} bytes: fix or remove it")
    return data


def fsync_dir(path: Path) -> None:
    """Make a rename or link in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
