"""The node store: resumable partial downloads, range requests, shared blobs."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.errors import DigestMismatch, LayoutError
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import BlobWriter, OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.partial import ResumableWriter
from pullbroker_sidecar.pull.store import ContentStore, copy_blobs

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request

BLOB = bytes(range(256)) * 4000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
DESCRIPTOR = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", DIGEST, len(BLOB))
PATH = f"/v2/team/app/blobs/{DIGEST}"
TOKEN = Secret("Bearer store-unit-token")


def _partial(store: ContentStore) -> Path:
    return store.partial_dir / DIGEST.replace(":", "-")


def _leave_partial(store: ContentStore, data: bytes) -> None:
    """What an interrupted download leaves behind."""
    with store.blob_writer(DESCRIPTOR) as writer:
        writer.write(data)


def _fetch(server: HTTPSServer, ca: TestCA, store: ContentStore) -> None:
    fetcher = BlobFetcher(server.url(), ssl_context(ca.pem), timeout=5, read_size=4096)
    try:
        with store.blob_writer(DESCRIPTOR) as writer:
            fetcher.fetch("team/app", DESCRIPTOR, TOKEN, writer, cancel=threading.Event())
            writer.commit()
    finally:
        fetcher.close()


class TestResumableWriter:
    def test_interrupted_bytes_stay_for_the_next_attempt(self, tmp_path: Path) -> None:
        """A writer abandoned mid-blob keeps its bytes; the next one starts at that offset."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:1000])
        with store.blob_writer(DESCRIPTOR) as writer:
            assert writer.offset == 1000
            writer.write(BLOB[1000:])
            writer.commit()
        assert store.blob_path(DIGEST).read_bytes() == BLOB
        assert not _partial(store).exists()

    def test_a_bad_prefix_fails_and_is_dropped(self, tmp_path: Path) -> None:
        """Kept bytes that were wrong fail the digest check, and are not kept again."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, b"X" * 1000)
        with store.blob_writer(DESCRIPTOR) as writer:
            writer.write(BLOB[1000:])
            with pytest.raises(DigestMismatch):
                writer.commit()
        assert not store.has_blob(DESCRIPTOR)
        assert not _partial(store).exists()

    def test_empty_attempt_leaves_no_file(self, tmp_path: Path) -> None:
        """A writer that got no byte removes its partial file."""
        store = ContentStore.open(tmp_path / "store")
        with store.blob_writer(DESCRIPTOR):
            pass
        assert list(store.partial_dir.iterdir()) == []

    def test_a_locked_partial_means_a_private_temp_file(self, tmp_path: Path) -> None:
        """Another pull holding the blob's partial file: this one writes a temp file instead."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:10])
        fd = os.open(_partial(store), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with store.blob_writer(DESCRIPTOR) as writer:
                assert isinstance(writer, BlobWriter)
                writer.write(BLOB)
                writer.commit()
        finally:
            os.close(fd)
        assert store.has_blob(DESCRIPTOR)
        with store.blob_writer(DESCRIPTOR) as again:
            assert isinstance(again, ResumableWriter)


class TestRangeFetch:
    def test_resume_asks_for_the_rest_only(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """Kept bytes: `Range: bytes=N-`; a matching 206 completes the blob."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])
        server.answers[PATH] = Reply(
            206, {"Content-Range": f"bytes 5000-{len(BLOB) - 1}/{len(BLOB)}"}, BLOB[5000:]
        )
        _fetch(server, test_ca, store)
        assert server.requests[0].headers["range"] == "bytes=5000-"
        assert store.blob_path(DIGEST).read_bytes() == BLOB

    def test_whole_blob_answer_starts_over(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A registry that ignores Range (200, whole blob) is fine: the prefix is dropped."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])
        server.answers[PATH] = Reply(200, body=BLOB)
        _fetch(server, test_ca, store)
        assert store.blob_path(DIGEST).read_bytes() == BLOB

    def test_another_range_is_refused_and_fetched_whole(
        self, server: HTTPSServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A 206 for other bytes than asked: asked again without Range, nothing mixed."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])

        def route(_: HTTPSServer, request: Request) -> Reply:
            if "range" in request.headers:
                return Reply(206, {"Content-Range": f"bytes 4000-{len(BLOB) - 1}/*"}, BLOB[4000:])
            return Reply(200, body=BLOB)

        server.route = route
        _fetch(server, test_ca, store)
        assert [s.headers.get("range") for s in server.requests] == ["bytes=5000-", None]
        assert store.blob_path(DIGEST).read_bytes() == BLOB


class TestCopies:
    def test_a_layout_gets_its_own_read_only_copy(self, tmp_path: Path) -> None:
        """An oci: destination gets a copy of the store's blob (another inode), both 0444."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        layout = OciLayout.open(tmp_path / "oci")
        copy_blobs(store, layout, (DESCRIPTOR,))
        copy, original = layout.blob_path(DIGEST).stat(), store.blob_path(DIGEST).stat()
        assert copy.st_ino != original.st_ino
        assert (stat.S_IMODE(copy.st_mode), stat.S_IMODE(original.st_mode)) == (0o444, 0o444)
        assert layout.blob_path(DIGEST).read_bytes() == BLOB

    def test_a_write_through_the_layout_never_reaches_the_store(self, tmp_path: Path) -> None:
        """A write into the layout's copy leaves the store's blob verified; a new copy heals it."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        layout = OciLayout.open(tmp_path / "oci")
        copy_blobs(store, layout, (DESCRIPTOR,))
        _overwrite(layout.blob_path(DIGEST), b"X" * len(BLOB))
        assert store.has_blob(DESCRIPTOR)
        assert store.blob_path(DIGEST).read_bytes() == BLOB
        assert not layout.has_blob(DESCRIPTOR)
        copy_blobs(store, layout, (DESCRIPTOR,))
        assert layout.blob_path(DIGEST).read_bytes() == BLOB


def _overwrite(path: Path, data: bytes) -> None:
    """What a user (or a container engine) writing through a blob file does."""
    path.chmod(0o644)
    with path.open("r+b") as fh:
        fh.write(data)


def _fingerprint_now(path: Path) -> bytes:
    """The fingerprint the store writes down for a blob file as it is now."""
    st = os.lstat(path)
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}".encode()


class TestTrust:
    def test_a_write_after_commit_is_caught_and_the_blob_dropped(self, tmp_path: Path) -> None:
        """Same size, other bytes, written in place: no longer trusted, removed for a download."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        _overwrite(store.blob_path(DIGEST), b"Y" * len(BLOB))
        assert not store.has_blob(DESCRIPTOR)
        assert not os.path.lexists(store.blob_path(DIGEST))

    def test_open_blob_refuses_a_blob_written_in_place(self, tmp_path: Path) -> None:
        """Same inode, same size, other bytes: open_blob refuses it, and it is not stored."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        inode = store.blob_path(DIGEST).stat().st_ino
        _overwrite(store.blob_path(DIGEST), b"Y" * len(BLOB))
        assert store.blob_path(DIGEST).stat().st_ino == inode
        with pytest.raises(LayoutError, match="changed since it was verified"):
            store.open_blob(DIGEST)
        assert store.stored_size(DIGEST) is None

    def test_a_second_link_is_not_trusted_even_with_a_matching_fingerprint(
        self, tmp_path: Path
    ) -> None:
        """Link count 2, fingerprint rewritten to match: refused, then re-made a private copy."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        path, link = store.blob_path(DIGEST), tmp_path / "destination-link"
        marker = store.verified_dir / DIGEST.replace(":", "-")
        assert marker.read_bytes() == _fingerprint_now(path)  # the marker's format, as written
        os.link(path, link)
        marker.write_bytes(_fingerprint_now(path))  # matches again: only the link count differs
        with pytest.raises(LayoutError, match="changed since it was verified"):
            store.open_blob(DIGEST)
        assert store.has_blob(DESCRIPTOR)  # hashed again into a fresh inode of its own
        assert path.stat().st_nlink == 1
        assert path.stat().st_ino != link.stat().st_ino
        assert link.read_bytes() == BLOB
        with store.open_blob(DIGEST) as fh:
            assert fh.read() == BLOB

    def test_a_planted_file_is_not_trusted_by_its_name(self, tmp_path: Path) -> None:
        """A wrong file of the right size at a digest path (no fingerprint) is not a blob."""
        store = ContentStore.open(tmp_path / "store")
        store.blob_path(DIGEST).write_bytes(b"Z" * len(BLOB))
        assert not store.has_blob(DESCRIPTOR)
        with store.blob_writer(DESCRIPTOR) as writer:
            writer.write(BLOB)
            writer.commit()
        assert store.has_blob(DESCRIPTOR)

    def test_a_symlink_at_a_digest_path_is_never_followed(self, tmp_path: Path) -> None:
        """A symlink to the right bytes is not trusted; the download replaces the link only."""
        store = ContentStore.open(tmp_path / "store")
        outside = tmp_path / "outside"
        outside.write_bytes(BLOB)
        store.blob_path(DIGEST).symlink_to(outside)
        assert not store.has_blob(DESCRIPTOR)
        with store.blob_writer(DESCRIPTOR) as writer:
            writer.write(BLOB)
            writer.commit()
        assert not store.blob_path(DIGEST).is_symlink()
        assert outside.read_bytes() == BLOB
        assert stat.S_IMODE(outside.stat().st_mode) == 0o644

    def test_a_symlink_at_a_partial_path_is_never_followed(self, tmp_path: Path) -> None:
        """A symlink planted where a partial download goes is removed; its target untouched."""
        store = ContentStore.open(tmp_path / "store")
        outside = tmp_path / "outside"
        outside.write_bytes(b"precious" * 100)
        _partial(store).symlink_to(outside)
        with store.blob_writer(DESCRIPTOR) as writer:
            assert writer.offset == 0
            writer.write(BLOB)
            writer.commit()
        assert outside.read_bytes() == b"precious" * 100
        assert store.has_blob(DESCRIPTOR)

    def test_a_symlinked_blobs_folder_is_refused(self, tmp_path: Path) -> None:
        """`blobs/` as a symlink: the store refuses to open rather than write through it."""
        elsewhere = tmp_path / "elsewhere"
        (elsewhere / "sha256").mkdir(parents=True)
        root = tmp_path / "store"
        root.mkdir()
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (root / "blobs").symlink_to(elsewhere)
        with pytest.raises(LayoutError, match="symbolic link"):
            ContentStore.open(root)
        assert list((elsewhere / "sha256").iterdir()) == []

    def test_a_blob_without_fingerprint_is_rehashed_into_a_private_copy(
        self, tmp_path: Path
    ) -> None:
        """An older store's blob, hard-linked elsewhere, verifies and becomes a private inode."""
        store = ContentStore.open(tmp_path / "store")
        store.blob_path(DIGEST).write_bytes(BLOB)
        os.link(store.blob_path(DIGEST), tmp_path / "old-destination-link")
        assert store.has_blob(DESCRIPTOR)
        assert store.blob_path(DIGEST).stat().st_nlink == 1
        assert (
            store.blob_path(DIGEST).stat().st_ino
            != (tmp_path / "old-destination-link").stat().st_ino
        )
        assert store.has_blob(DESCRIPTOR)
