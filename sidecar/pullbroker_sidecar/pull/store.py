"""The node-local content store: one blob store shared by every pull on this node.

    <home>/store/                (0700: only the sidecar's user writes here)
        oci-layout, index.json   an OCI layout: every image pulled, by full reference
        blobs/sha256/<hex>       verified blobs (0444), shared by every image that names them
        verified/sha256-<hex>    the fingerprint each blob file had when it was verified
        partial/sha256-<hex>     interrupted downloads, kept so the next pull resumes them
        .pullbroker-tmp/         temp files while they are written (see tempfiles.py)

Pulls download into the store and destinations are filled from it by copy (see
blobfiles.py: a reflink where the file system can, never a hard link), so a second image
with layers in common downloads only what is new, and nothing written through a
destination can reach a blob here. Interrupted downloads resume (see partial.py).

Trust. A blob file counts as stored only while it is exactly the file that was verified.
When a verified blob is renamed into place, the store writes down its fingerprint: inode,
size, mtime and ctime (nanoseconds). Any write changes mtime and ctime, and so does a
chmod (needed first: blobs are 0444), a new hard link, or a rename over it; ctime cannot
be set back from user space, and a replacement file has its own. A blob also counts only
with a link count of 1, so an inode shared with a destination (as earlier versions left
them) is never trusted. Checking costs one `lstat` and a small read, not a hash of the
blob; a blob whose fingerprint does not match (or that has none: a crash between rename
and fingerprint, or an older store) is hashed again and kept only as a fresh private copy
if it verifies, else removed and downloaded. The one blind spot is a write in the same
timestamp tick as the commit (a few ms on file systems with coarse clocks), by someone who
can already write to the store: the sidecar's own user or root.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.blobfiles import fsync_dir, open_regular, real_dir
from pullbroker_sidecar.pull.layout import BlobWriter, OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.partial import Busy, ResumableWriter

STORE_DIR = "store"
PARTIAL_DIR = "partial"
VERIFIED_DIR = "verified"
_CHUNK = 1 << 20


def _fingerprint(st: os.stat_result) -> str:
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


class ContentStore:
    """The node's shared blob store (an OCI layout plus resumable partial downloads)."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.root = layout.root
        self.partial_dir = layout.root / PARTIAL_DIR
        self.verified_dir = layout.root / VERIFIED_DIR

    @classmethod
    def open(cls, root: Path) -> ContentStore:
        """Use `root` as the store, creating it (0700) when missing."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            store = cls(OciLayout.open(root))
            real_dir(store.partial_dir)
            real_dir(store.verified_dir)
        except OSError as exc:
            raise LayoutError(f"cannot use {root} as the node store: {exc.strerror}") from None
        return store

    def blob_path(self, digest: str) -> Path:
        """Where a verified blob lives."""
        return self.layout.blob_path(digest)

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when the blob is stored and still the file that was verified."""
        try:
            st = os.lstat(self.blob_path(descriptor.digest))
        except FileNotFoundError:
            return False
        if st.st_size == descriptor.size and self._trusted(descriptor.digest, st):
            return True
        return self._adopt(descriptor)

    def open_blob(self, digest: str) -> BinaryIO:
        """A verified blob's file, read-only; LayoutError if it changed since it was verified."""
        fd = open_regular(self.blob_path(digest))
        if fd is None or not self._trusted(digest, os.fstat(fd)):
            if fd is not None:
                os.close(fd)
            raise LayoutError(
                f"blob {digest} in the node store {self.root} is missing or changed since "
                "it was verified: pull again"
            )
        return os.fdopen(fd, "rb")

    def blob_writer(self, descriptor: Descriptor) -> ResumableWriter | BlobWriter:
        """A resumable writer, or a private temp one when another pull holds this blob."""
        final = self.layout.blob_path(descriptor.digest)
        real_dir(final.parent)
        try:
            return ResumableWriter(self._partial(descriptor), final, descriptor, self._mark)
        except Busy:
            return self.layout.blob_writer(descriptor, self._mark)

    def put_blob(self, descriptor: Descriptor, data: bytes) -> None:
        """Store a small blob held in memory (a manifest), verified like any other."""
        if self.has_blob(descriptor):
            return
        with self.layout.blob_writer(descriptor, self._mark) as writer:
            writer.write(data)
            writer.commit()

    def partial_size(self, descriptor: Descriptor) -> int:
        """Bytes of an interrupted download of this blob kept for resuming (0 if none)."""
        try:
            st = os.lstat(self._partial(descriptor))
        except FileNotFoundError:
            return 0
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def stored_size(self, digest: str) -> int | None:
        """The size of a verified blob of that digest, or None when the store lacks it."""
        try:
            st = os.lstat(self.blob_path(digest))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if self.has_blob(Descriptor("", digest, st.st_size)) else None

    def touch(self, digest: str) -> None:
        """Note that a blob was just used (its fingerprint file's mtime: LRU collection)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._marker(digest))

    def last_used(self, digest: str, blob: os.stat_result) -> float:
        """When a blob was last used: its fingerprint's mtime, else the blob's own."""
        try:
            return os.lstat(self._marker(digest)).st_mtime
        except FileNotFoundError:
            return blob.st_mtime

    def remove_blob(self, digest: str) -> None:
        """Drop a blob and its fingerprint (readers holding it open keep their file)."""
        self.blob_path(digest).unlink(missing_ok=True)
        self._marker(digest).unlink(missing_ok=True)

    def _partial(self, descriptor: Descriptor) -> Path:
        return self.partial_dir / descriptor.digest.replace(":", "-", 1)

    def _marker(self, digest: str) -> Path:
        return self.verified_dir / digest.replace(":", "-", 1)

    def _trusted(self, digest: str, st: os.stat_result) -> bool:
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        fd = open_regular(self._marker(digest))
        if fd is None:
            return False
        with os.fdopen(fd, "rb") as fh:
            return fh.read(256) == _fingerprint(st).encode()

    def _mark(self, final: Path) -> None:
        """Write down the fingerprint of a blob just verified and renamed into place."""
        fh, temp = self.layout.temps.create()
        try:
            with fh:
                fh.write(_fingerprint(os.lstat(final)).encode())
                os.replace(temp, self._marker(final.parent.name + ":" + final.name))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            self.layout.temps.tidy()

    def _adopt(self, descriptor: Descriptor) -> bool:
        """A blob file without a matching fingerprint: kept as a fresh copy if it verifies."""
        path = self.blob_path(descriptor.digest)
        fd = open_regular(path)
        if fd is None:  # a symlink, a FIFO, a folder: never read, never followed
            _remove(path)
            return False
        try:
            with self.layout.blob_writer(descriptor, self._mark) as writer:
                while chunk := os.read(fd, _CHUNK):
                    writer.write(chunk)
                writer.commit()
        except DigestMismatch:
            _remove(path)
            return False
        finally:
            os.close(fd)
        return True


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        raise LayoutError(f"{path} is a folder where a blob belongs: remove it") from None


def copy_blobs(store: ContentStore, layout: OciLayout, descriptors: Sequence[Descriptor]) -> None:
    """Give `layout` its own copy of each blob it lacks (never a link to the store's file)."""
    copied = False
    for descriptor in descriptors:
        if layout.has_blob(descriptor):
            continue
        with store.open_blob(descriptor.digest) as source:
            layout.copy_in(descriptor, source.fileno())
        copied = True
    if copied:
        fsync_dir(layout.blobs_dir / "sha256")
