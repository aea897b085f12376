"""Interrupted downloads of the node store, kept in `partial/` so the next pull resumes them.

The next attempt hashes the kept prefix again (sha256 runs at ~1.7 GB/s, far faster than
any registry) and asks the registry for the rest only. Each partial file is held under an
exclusive `flock` while written, so two pulls on one node never append to the same file;
the loser of that race downloads into a private temp file instead. Nothing in a partial
file is trusted: the blob is committed only when the whole of it hashes to its digest.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from io import FileIO
from pathlib import Path
from types import TracebackType

from pullbroker_sidecar.errors import DigestMismatch
from pullbroker_sidecar.pull.blobfiles import READ_ONLY, fsync_dir
from pullbroker_sidecar.pull.layout import Committed, blob_mismatch
from pullbroker_sidecar.pull.manifest import Descriptor

_HASH_CHUNK = 1 << 20


class Busy(Exception):
    """Another pull on this node holds the partial file of that blob."""


class ResumableWriter:
    """A blob download kept in `partial/` until it verifies; resumable after a failure."""

    def __init__(
        self,
        partial: Path,
        final: Path,
        descriptor: Descriptor,
        on_commit: Committed | None = None,
    ) -> None:
        self._descriptor = descriptor
        self._partial = partial
        self._final = final
        self._on_commit = on_commit
        self._file = _open_locked(partial)
        self._hash = hashlib.new(descriptor.digest.split(":", 1)[0])
        self._done = False
        try:
            self.written = self._rehash_prefix()
        except BaseException:
            self._file.close()
            raise

    @property
    def path(self) -> Path:
        """The file the bytes go to until they verify (a mirror streams from it meanwhile)."""
        return self._partial

    @property
    def offset(self) -> int:
        """Bytes kept from an earlier attempt (the registry is asked for the rest)."""
        return self.written

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`; more bytes than the descriptor's size fail at once."""
        self.written += len(data)
        if self.written > self._descriptor.size:
            raise self._mismatch("more bytes than its descriptor's size")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0 :]

    def restart(self) -> None:
        """Forget the bytes held; the next write is byte 0."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.new(self._hash.name)
        self.written = 0

    def commit(self) -> None:
        """Verify size and digest, make the bytes durable, and move the blob into place."""
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if self.written != self._descriptor.size:
            raise self._mismatch(f"{self.written} bytes, descriptor says {self._descriptor.size}")
        if actual != self._descriptor.digest:
            raise self._mismatch(f"content hashes to {actual}", actual=actual)
        os.fchmod(self._file.fileno(), READ_ONLY)
        os.fsync(self._file.fileno())
        os.replace(self._partial, self._final)  # still under our lock: nobody else appends
        self._done = True
        self._file.close()
        fsync_dir(self._final.parent)
        if self._on_commit is not None:
            self._on_commit(self._final)

    def discard(self) -> None:
        """Stop writing; the bytes stay for the next attempt unless there are none."""
        if self._file.closed:
            return
        if not self._done and self.written == 0:
            self._partial.unlink(missing_ok=True)  # before the lock goes: see _open_locked
        self._file.close()

    def _rehash_prefix(self) -> int:
        size = os.fstat(self._file.fileno()).st_size
        if size >= self._descriptor.size:  # complete-but-uncommitted or bogus: start over
            self._file.truncate(0)
            return 0
        self._file.seek(0)
        remaining = size
        while remaining:
            chunk = self._file.read(min(_HASH_CHUNK, remaining))
            if not chunk:
                break
            self._hash.update(chunk)
            remaining -= len(chunk)
        self._file.seek(size - remaining)
        self._file.truncate()
        return size - remaining

    def _mismatch(self, detail: str, actual: str = "") -> DigestMismatch:
        # A bad prefix must not poison the next attempt: the partial file goes too.
        written = self.written
        self.restart()
        return blob_mismatch(self._descriptor, detail, actual, written)

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def _open_locked(path: Path) -> FileIO:
    """Open and lock `path`, making sure the lock is on the file the path names now.

    A writer removes an empty partial file while holding its lock; a process that opened
    the old file just before would otherwise lock an unlinked inode and write into it.
    A symlink planted at the partial file's name is removed, never followed (O_CREAT
    alone would create, append to or truncate whatever it points at).
    """
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink(missing_ok=True)
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device someone put there
            os.close(fd)
            path.unlink(missing_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return os.fdopen(fd, "r+b", buffering=0)
        os.close(fd)
    raise Busy
