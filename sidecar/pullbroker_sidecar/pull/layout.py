"""An OCI image layout on disk that only ever holds verified content.

A blob is streamed into a temp file in `blobs/` (same file system, so the final rename
is atomic), hashed as it is written, and renamed to `blobs/<alg>/<hex>` only when digest
and size both match its descriptor. `index.json` is rewritten atomically under a lock on
the layout directory, so two pulls into one layout do not lose each other's tags.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from pullbroker_client.registry.mediatypes import OCI_INDEX

from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.manifest import REF_NAME, Descriptor, valid_digest

LAYOUT_VERSION = "1.0.0"
TEMP_PREFIX = ".pull-"
TEMP_SUFFIX = ".tmp"
_BLOB_MODE = 0o644


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

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when a verified blob of that digest and size is stored."""

    def blob_writer(self, descriptor: Descriptor) -> CommittingSink:
        """A sink that commits the blob once it verifies."""


class BlobWriter:
    """One blob being downloaded: hashed while written, committed only when it verifies."""

    def __init__(self, blobs_dir: Path, final: Path, descriptor: Descriptor) -> None:
        self._descriptor = descriptor
        self._final = final
        algorithm = descriptor.digest.split(":", 1)[0]
        self._hash = hashlib.new(algorithm)
        fd, name = tempfile.mkstemp(dir=blobs_dir, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
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
        os.fchmod(self._file.fileno(), _BLOB_MODE)
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._final)
        self._done = True
        fsync_dir(self._final.parent)

    def discard(self) -> None:
        """Close and remove the temp file (idempotent)."""
        self._file.close()
        if not self._done:
            self._temp.unlink(missing_ok=True)
            self._done = True

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

    @classmethod
    def open(cls, root: Path) -> OciLayout:
        """Use `root` as a layout, creating it when missing or empty."""
        layout = cls(root)
        marker = root / "oci-layout"
        if marker.exists():
            layout._check_marker(marker)
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise LayoutError(
                f"{root} exists and is not an OCI layout (no oci-layout file): "
                "choose a new or empty directory"
            )
        try:
            (layout.blobs_dir / "sha256").mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                _atomic_write(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        except OSError as exc:
            raise LayoutError(f"cannot create an OCI layout in {root}: {exc.strerror}") from None
        return layout

    def blob_path(self, digest: str) -> Path:
        """`blobs/<alg>/<hex>`; only well-formed digests are accepted, never a path."""
        if not valid_digest(digest):
            raise LayoutError(f"refusing to store a blob named {digest!r}: not a digest")
        algorithm, hex_ = digest.split(":", 1)
        return self.blobs_dir / algorithm / hex_

    def has_blob(self, descriptor: Descriptor) -> bool:
        """True when a blob of that digest and size is already stored."""
        try:
            return self.blob_path(descriptor.digest).stat().st_size == descriptor.size
        except FileNotFoundError:
            return False

    def blob_writer(self, descriptor: Descriptor) -> BlobWriter:
        """A writer that commits to `blob_path(descriptor.digest)` once verified."""
        final = self.blob_path(descriptor.digest)
        final.parent.mkdir(exist_ok=True)
        return BlobWriter(self.blobs_dir, final, descriptor)

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
            _atomic_write(self.root / "index.json", json.dumps(index, indent=2).encode())

    def _check_marker(self, marker: Path) -> None:
        try:
            version = json.loads(marker.read_bytes()).get("imageLayoutVersion")
        except (OSError, ValueError, AttributeError):
            version = None
        if version != LAYOUT_VERSION:
            raise LayoutError(
                f"{marker} does not declare imageLayoutVersion {LAYOUT_VERSION}: "
                "this is not an OCI layout this sidecar can add to"
            )

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except (OSError, ValueError) as exc:
            raise LayoutError(
                f"cannot read {path} ({type(exc).__name__}): fix or remove it"
            ) from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise LayoutError(f"{path} is not an OCI image index: fix or remove it")
        return index

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


def _atomic_write(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), _BLOB_MODE)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or link in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def blob_mismatch(descriptor: Descriptor, detail: str, actual: str, written: int) -> DigestMismatch:
    """The error for a blob whose bytes do not match its descriptor (nothing was stored)."""
    return DigestMismatch(
        f"blob {descriptor.digest} failed verification ({detail}); it was not stored: "
        "the registry's copy may be corrupt or the transfer was altered",
        digest=descriptor.digest,
        actual=actual,
        size=written,
    )
