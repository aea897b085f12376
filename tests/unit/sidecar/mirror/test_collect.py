"""The node store is kept under its size by removing the least recently used blobs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pullbroker_sidecar.mirror.collect import collect
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.store import ContentStore


def _put(store: ContentStore, data: bytes, used: float) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.put_blob(Descriptor("application/octet-stream", digest, len(data)), data)
    store.touch(digest)
    marker = store.verified_dir / digest.replace(":", "-")
    os.utime(marker, (used, used))
    return digest


class TestCollect:
    """Least recently used first, down to the limit, and nothing when under it."""

    def test_oldest_go_first(self, tmp_path: Path) -> None:
        """Three 1000-byte blobs, limit 2000: the least recently used one goes."""
        store = ContentStore.open(tmp_path / "store")
        old = _put(store, b"a" * 1000, used=1_000)
        new = _put(store, b"b" * 1000, used=3_000)
        mid = _put(store, b"c" * 1000, used=2_000)
        assert collect(store, 2000) == (1, 1000)
        assert store.stored_size(old) is None
        assert store.stored_size(mid) == 1000
        assert store.stored_size(new) == 1000

    def test_touch_keeps_a_blob(self, tmp_path: Path) -> None:
        """A blob served again (touched) outlives one that was not."""
        store = ContentStore.open(tmp_path / "store")
        first = _put(store, b"x" * 10, used=1_000)
        second = _put(store, b"y" * 10, used=2_000)
        store.touch(first)
        collect(store, 10)
        assert store.stored_size(first) == 10
        assert store.stored_size(second) is None

    def test_under_the_limit(self, tmp_path: Path) -> None:
        """Nothing is removed while the store fits."""
        store = ContentStore.open(tmp_path / "store")
        _put(store, b"z" * 10, used=1_000)
        assert collect(store, 10) == (0, 0)
