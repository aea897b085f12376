"""A pull that resumes an interrupted download says so, and how much."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.progress import LineProgress
from pullbroker_sidecar.pull.store import ContentStore


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TestResumedPullReport:
    """A pull that resumes an interrupted download says how much it resumed."""

    def test_line_progress_names_the_resumed_bytes(self, tmp_path: Path) -> None:
        """Bytes kept in the store's partial/ are reported, not "0 already present" alone."""
        blob = b"x" * 300_000
        descriptor = Descriptor(
            "application/vnd.oci.image.layer.v1.tar", digest_of(blob), len(blob)
        )
        store = ContentStore.open(tmp_path / "store")
        with store.blob_writer(descriptor) as writer:
            writer.write(blob[:200_000])  # interrupted: no commit, the prefix is kept
        resumed = store.partial_size(descriptor)
        assert resumed == 200_000
        stream = io.StringIO()
        LineProgress(stream).start(1, len(blob), 0, resumed)
        assert "resuming 195.3 KiB kept from an interrupted pull" in stream.getvalue()

    def test_a_layout_keeps_nothing_to_resume(self, tmp_path: Path) -> None:
        """An oci: layout's temp files start empty, so it never claims a resume."""
        layout = OciLayout.open(tmp_path / "oci")
        assert layout.partial_size(Descriptor("m", "sha256:" + "0" * 64, 5)) == 0
