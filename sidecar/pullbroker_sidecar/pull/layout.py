"""An OCI image layout on disk that only ever holds verified content.

A blob is streamed into a locked temp file outside `blobs/` (see tempfiles.py), hashed as
it is written, and renamed to `blobs/<alg>/<hex>` (read-only, 0444) only when digest and
size both match its descriptor. `index.json` is rewritten atomically under a lock on the
layout directory, so two pulls into one layout do not lose each other's tags.

A layout is somebody's folder: anything may have been written into it since. So a blob
already there counts only when it is a regular file that hashes to its name (`has_blob`
reads it; that costs a read, not a download), and a symlink is never followed (see
blobfiles.py); a wrong file is replaced by the download.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from pullbroker_client.registry.document import load_object
from pullbroker_client.registry.errors import RegistryProtocolError
from pullbroker_client.registry.mediatypes import OCI_INDEX

from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.blobfiles import (
    READ_ONLY,
    copy_fd,
    fsync_dir,
    open_regular,
    read_small,
    real_dir,
    verified,
)
from pullbroker_sidecar.pull.manifest import REF_NAME, Descriptor, valid_digest
from pullbroker_sidecar.pull.tempfiles import TempArea

LAYOUT_VERSION = "1.0.0"
INDEX_LIMIT = 64 << 20  # index.json of a layout holding thousands of tags is a few MiB
_FILE_MODE = 0o644
Committed = Callable[[Path], None]
"""Told the final path of a blob just committed (the store records it as verified)."""


class BlobSink(Protocol):
    """Where a download writes: appends verified-later bytes, may already hold a prefix."""

    @property
    def offset(self) -> int:
        """Bytes already held (a resumed download asks the registry for the rest only)."""

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`."""

    def restart(self) -> None:
        """Forget every byte held; the next write is byte 0."""


class CommittingSink(BlobSink, Protocol):
    """A sink that verifies and stores the blob on `commit`, and cleans up on exit."""

    def commit(self) -> None:
        """Verify digest and size, then store the blob."""

    def __enter__(self) -> CommittingSink: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class BlobStore(Protocol):
    """Where downloads land: an OCI layout, or the node's shared content store."""

    def partial_size(self, descriptor: Descriptor) -> int:
        """Bytes of an interrupted download of `descriptor` kept for resuming (0 if none)."""

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when a verified blob of that digest and size is stored."""

    def blob_writer(self, descriptor: Descriptor) -> CommittingSink:
        """A sink that commits the blob once it verifies."""


class BlobWriter:
    """One blob being downloaded: hashed while written, committed only when it verifies."""

    def __init__(
        self,
        temps: TempArea,
        final: Path,
        descriptor: Descriptor,
        on_commit: Committed | None = None,
    ) -> None:
        self._descriptor = descriptor
        self._final = final
        self._temps = temps
        self._on_commit = on_commit
        algorithm = descriptor.digest.split(":", 1)[0]
        self._hash = hashlib.new(algorithm)
        self._file, self._temp = temps.create()
        self.written = 0
        self._done = False

    @property
    def temp_path(self) -> Path:
        """Where the bytes go until they verify."""
        return self._temp

    @property
    def offset(self) -> int:
        """Bytes already held from an earlier attempt (always 0: temp files start empty)."""
        return 0

    def restart(self) -> None:
        """Drop what was written so far; the download starts again from byte 0."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.new(self._hash.name)
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`; more bytes than the descriptor's size fail at once."""
        self.written += len(data)
        if self.written > self._descriptor.size:
            raise self._mismatch("more bytes than its descriptor's size")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0 :]

    def commit(self) -> None:
        """Verify size and digest, make the bytes durable, and rename into place."""
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if self.written != self._descriptor.size:
            raise self._mismatch(f"{self.written} bytes, descriptor says {self._descriptor.size}")
        if actual != self._descriptor.digest:
            raise self._mismatch(f"content hashes to {actual}", actual=actual)
        os.fchmod(self._file.fileno(), READ_ONLY)
        os.fsync(self._file.fileno())
        os.replace(self._temp, self._final)  # replaces a wrong file or symlink, never follows
        self._done = True
        self._file.close()
        fsync_dir(self._final.parent)
        if self._on_commit is not None:
            self._on_commit(self._final)

    def discard(self) -> None:
        """Close and remove the temp file (idempotent)."""
        if not self._done:
            self._temp.unlink(missing_ok=True)  # before the lock goes: see tempfiles.py
            self._done = True
        self._file.close()
        self._temps.tidy()

    def _mismatch(self, detail: str, actual: str = "") -> DigestMismatch:
        return blob_mismatch(self._descriptor, detail, actual, self.written)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


class OciLayout:
    """An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.temps = TempArea(root, legacy=(root, self.blobs_dir))

    @classmethod
    def open(cls, root: Path) -> OciLayout:
        """Use `root` as a layout, creating it when missing or empty; sweeps crash leftovers."""
        layout = cls(root)
        marker = root / "oci-layout"
        if os.path.lexists(marker):
            layout._check_marker(marker)
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise LayoutError(
                f"{root} exists and is not an OCI layout (no oci-layout file): "
                "choose a new or empty directory"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            real_dir(real_dir(layout.blobs_dir) / "sha256")
            if not marker.exists():
                version = {"imageLayoutVersion": LAYOUT_VERSION}
                layout._atomic_write(marker, json.dumps(version).encode())
            layout.temps.sweep()
        except OSError as exc:
            raise LayoutError(f"cannot create an OCI layout in {root}: {exc.strerror}") from None
        return layout

    def blob_path(self, digest: str) -> Path:
        """`blobs/<alg>/<hex>`; only well-formed digests are accepted, never a path."""
        if not valid_digest(digest):
            raise LayoutError(f"refusing to store a blob named {digest!r}: not a digest")
        algorithm, hex_ = digest.split(":", 1)
        return self.blobs_dir / algorithm / hex_

    def partial_size(self, descriptor: Descriptor) -> int:
        """Bytes an interrupted download left to resume from (a layout keeps none: 0)."""
        return 0

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when the blob is there as a regular file that hashes to its digest."""
        return verified(self.blob_path(descriptor.digest), descriptor)

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's file, read-only; never through a symlink."""
        fd = open_regular(self.blob_path(digest))
        if fd is None:
            raise LayoutError(f"blob {digest} is missing from {self.root} (or not a file)")
        return os.fdopen(fd, "rb")

    def blob_writer(self, descriptor: Descriptor, on_commit: Committed | None = None) -> BlobWriter:
        """A writer that commits to `blob_path(descriptor.digest)` once verified."""
        final = self.blob_path(descriptor.digest)
        real_dir(final.parent)
        return BlobWriter(self.temps, final, descriptor, on_commit)

    def copy_in(self, descriptor: Descriptor, source: int) -> None:
        """Store a copy of a verified blob open on fd `source` (the caller fsyncs the folder)."""
        final = self.blob_path(descriptor.digest)
        real_dir(final.parent)
        fh, temp = self.temps.create()
        try:
            with fh:
                copy_fd(source, fh.fileno(), descriptor.size)
                os.fchmod(fh.fileno(), READ_ONLY)
                os.fsync(fh.fileno())
                os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            self.temps.tidy()

    def put_blob(self, descriptor: Descriptor, data: bytes) -> None:
        """Store a small blob held in memory (a manifest), verified like any other."""
        if self.has_blob(descriptor):
            return
        with self.blob_writer(descriptor) as writer:
            writer.write(data)
            writer.commit()

    def tag(self, descriptor: Descriptor, ref_name: str | None) -> None:
        """Add `descriptor` to index.json, replacing any entry with the same ref name."""
        with self._locked():
            index = self._read_index()
            kept = [m for m in index["manifests"] if not _same_entry(m, descriptor, ref_name)]
            entry = descriptor.to_json()
            if ref_name:
                entry.setdefault("annotations", {})[REF_NAME] = ref_name
            index["manifests"] = [*kept, entry]
            self._atomic_write(self.root / "index.json", json.dumps(index, indent=2).encode())

    def _check_marker(self, marker: Path) -> None:
        try:
            data = read_small(marker, 4096) or b""
            version = load_object(data, str(marker)).get("imageLayoutVersion")
        except (OSError, RegistryProtocolError):
            version = None
        if version != LAYOUT_VERSION:
            raise LayoutError(
                f"{marker} does not declare imageLayoutVersion {LAYOUT_VERSION}: "
                "this is not an OCI layout this sidecar can add to"
            )

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            data = read_small(path, INDEX_LIMIT)
            if data is None:
                return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
            index = load_object(data, str(path))
        except OSError as exc:
            raise LayoutError(f"cannot read {path} ({exc.strerror}): fix or remove it") from None
        except RegistryProtocolError as exc:
            raise LayoutError(f"{exc}: fix or remove it") from None
        if not isinstance(index.get("manifests"), list):
            raise LayoutError(f"{path} is not an OCI image index: fix or remove it")
        return index

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fh, temp = self.temps.create()
        try:
            with fh:
                view = memoryview(data)
                while view:
                    view = view[fh.write(view) or 0 :]
                os.fchmod(fh.fileno(), _FILE_MODE)
                os.fsync(fh.fileno())
                os.replace(temp, path)  # still locked: a sweep cannot take it first
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            self.temps.tidy()
        fsync_dir(path.parent)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _same_entry(entry: Any, descriptor: Descriptor, ref_name: str | None) -> bool:
    annotations = entry.get("annotations") if isinstance(entry, dict) else None
    existing = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    if ref_name:
        return bool(existing == ref_name)
    return existing is None and isinstance(entry, dict) and entry.get("digest") == descriptor.digest


def blob_mismatch(descriptor: Descriptor, detail: str, actual: str, written: int) -> DigestMismatch:
    """The error for a blob whose bytes do not match its descriptor (nothing was stored)."""
    return DigestMismatch(
        f"blob {descriptor.digest} failed verification ({detail}); it was not stored: "
        "the registry's copy may be corrupt or the transfer was altered",
        digest=descriptor.digest,
        actual=actual,
        size=written,
    )
