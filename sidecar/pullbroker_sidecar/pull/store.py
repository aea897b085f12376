"""The node-local content store: one blob store shared by every pull on this node.

    <home>/store/
        oci-layout, index.json   an OCI layout: every image pulled, by full reference
        blobs/sha256/<hex>       verified blobs, shared by every image that names them
        partial/sha256-<hex>     interrupted downloads, kept so the next pull resumes them

Pulls download into the store and destinations are filled from it, so a second image with
layers in common downloads only what is new, whatever its destination. A download that is
interrupted (Ctrl-C, a dropped connection, a crash) leaves its bytes in `partial/`; the
next attempt hashes that prefix again (sha256 runs at ~1.7 GB/s, far faster than any
registry) and asks the registry for the rest only. Each partial file is held under an
exclusive `flock` while written, so two pulls on one node never append to the same file;
the loser of that race downloads into a private temp file instead. Nothing in a partial
file is trusted: the blob is committed only when the whole of it hashes to its digest.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from io import FileIO
from pathlib import Path
from types import TracebackType

from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.layout import BlobWriter, OciLayout, blob_mismatch, fsync_dir
from pullbroker_sidecar.pull.manifest import Descriptor

STORE_DIR = "store"
PARTIAL_DIR = "partial"
_HASH_CHUNK = 1 << 20
_BLOB_MODE = 0o644


class _Busy(Exception):
    """Another pull on this node holds the partial file of that blob."""


class ResumableWriter:
    """A blob download kept in `partial/` until it verifies; resumable after a failure."""

    def __init__(self, partial: Path, final: Path, descriptor: Descriptor) -> None:
        self._descriptor = descriptor
        self._partial = partial
        self._final = final
        self._file = _open_locked(partial)
        self._hash = hashlib.new(descriptor.digest.split(":", 1)[0])
        self._done = False
        try:
            self.written = self._rehash_prefix()
        except BaseException:
            self._file.close()
            raise

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
        os.fchmod(self._file.fileno(), _BLOB_MODE)
        os.fsync(self._file.fileno())
        os.replace(self._partial, self._final)  # still under our lock: nobody else appends
        self._done = True
        self._file.close()
        fsync_dir(self._final.parent)

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
    """
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _Busy from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return os.fdopen(fd, "r+b", buffering=0)
        os.close(fd)
    raise _Busy


class ContentStore:
    """The node's shared blob store (an OCI layout plus resumable partial downloads)."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.root = layout.root
        self.partial_dir = layout.root / PARTIAL_DIR

    @classmethod
    def open(cls, root: Path) -> ContentStore:
        """Use `root` as the store, creating it (0700) when missing."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            store = cls(OciLayout.open(root))
            store.partial_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LayoutError(f"cannot use {root} as the node store: {exc.strerror}") from None
        return store

    def blob_path(self, digest: str) -> Path:
        """Where a verified blob lives."""
        return self.layout.blob_path(digest)

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when the blob is stored, verified."""
        return self.layout.has_blob(descriptor)

    def blob_writer(self, descriptor: Descriptor) -> ResumableWriter | BlobWriter:
        """A resumable writer, or a private temp one when another pull holds this blob."""
        final = self.layout.blob_path(descriptor.digest)
        final.parent.mkdir(exist_ok=True)
        partial = self.partial_dir / descriptor.digest.replace(":", "-", 1)
        try:
            return ResumableWriter(partial, final, descriptor)
        except _Busy:
            return self.layout.blob_writer(descriptor)

    def put_blob(self, descriptor: Descriptor, data: bytes) -> None:
        """Store a small blob held in memory (a manifest), verified like any other."""
        self.layout.put_blob(descriptor, data)

    def partial_size(self, descriptor: Descriptor) -> int:
        """Bytes of an interrupted download of this blob kept for resuming (0 if none)."""
        try:
            return (self.partial_dir / descriptor.digest.replace(":", "-", 1)).stat().st_size
        except FileNotFoundError:
            return 0


def link_blobs(source: Path, layout: OciLayout, descriptors: tuple[Descriptor, ...]) -> None:
    """Put blobs of the store at `source` into `layout`: hard links, or verified copies."""
    store = OciLayout(source)
    for descriptor in descriptors:
        if layout.has_blob(descriptor):
            continue
        origin = store.blob_path(descriptor.digest)
        target = layout.blob_path(descriptor.digest)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(origin, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            _copy_verified(origin, layout, descriptor)
    fsync_dir(layout.blobs_dir / "sha256")


def _copy_verified(source: Path, layout: OciLayout, descriptor: Descriptor) -> None:
    with source.open("rb") as src, layout.blob_writer(descriptor) as writer:
        while chunk := src.read(_HASH_CHUNK):
            writer.write(chunk)
        writer.commit()
