"""The node store: resumable partial downloads, range requests, shared blobs."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.errors import DigestMismatch
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.layout import BlobWriter, OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.store import ContentStore, ResumableWriter, link_blobs

from tests.harness.certs import TestCA
from tests.unit.sidecar.https_server import Answer, RecordingServer

BLOB = bytes(range(256)) * 4000
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
DESCRIPTOR = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", DIGEST, len(BLOB))
PATH = f"/v2/team/app/blobs/{DIGEST}"
TOKEN = Secret("Bearer store-unit-token")


@pytest.fixture
def server(test_ca: TestCA) -> Iterator[RecordingServer]:
    srv = RecordingServer(test_ca, "store-blobs").start()
    try:
        yield srv
    finally:
        srv.stop()


def _partial(store: ContentStore) -> Path:
    return store.partial_dir / DIGEST.replace(":", "-")


def _leave_partial(store: ContentStore, data: bytes) -> None:
    """What an interrupted download leaves behind."""
    with store.blob_writer(DESCRIPTOR) as writer:
        writer.write(data)


def _fetch(server: RecordingServer, ca: TestCA, store: ContentStore) -> None:
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
        self, server: RecordingServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """Kept bytes: `Range: bytes=N-`; a matching 206 completes the blob."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])
        server.answers[PATH] = Answer(
            206, BLOB[5000:], {"Content-Range": f"bytes 5000-{len(BLOB) - 1}/{len(BLOB)}"}
        )
        _fetch(server, test_ca, store)
        assert server.seen[0].headers["range"] == "bytes=5000-"
        assert store.blob_path(DIGEST).read_bytes() == BLOB

    def test_whole_blob_answer_starts_over(
        self, server: RecordingServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A registry that ignores Range (200, whole blob) is fine: the prefix is dropped."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])
        server.answers[PATH] = Answer(200, BLOB)
        _fetch(server, test_ca, store)
        assert store.blob_path(DIGEST).read_bytes() == BLOB

    def test_another_range_is_refused_and_fetched_whole(
        self, server: RecordingServer, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """A 206 for other bytes than asked: asked again without Range, nothing mixed."""
        store = ContentStore.open(tmp_path / "store")
        _leave_partial(store, BLOB[:5000])

        def route(_: RecordingServer, path: str, headers: dict[str, str]) -> Answer:
            if "range" in headers:
                return Answer(206, BLOB[4000:], {"Content-Range": f"bytes 4000-{len(BLOB) - 1}/*"})
            return Answer(200, BLOB)

        server.route = route
        _fetch(server, test_ca, store)
        assert [s.headers.get("range") for s in server.seen] == ["bytes=5000-", None]
        assert store.blob_path(DIGEST).read_bytes() == BLOB


class TestLinks:
    def test_store_blobs_are_hard_linked_into_a_layout(self, tmp_path: Path) -> None:
        """An oci: destination gets the store's blob files (same inode), not copies."""
        store = ContentStore.open(tmp_path / "store")
        store.put_blob(DESCRIPTOR, BLOB)
        layout = OciLayout.open(tmp_path / "oci")
        link_blobs(store.root, layout, (DESCRIPTOR,))
        assert layout.blob_path(DIGEST).stat().st_ino == store.blob_path(DIGEST).stat().st_ino
