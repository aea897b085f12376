"""Temp files stay out of blobs/, and what a crashed pull left is swept; a live one is not."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.tempfiles import TEMP_DIR

DATA = b"x" * 4096
DESCRIPTOR = Descriptor("x", "sha256:" + hashlib.sha256(DATA).hexdigest(), len(DATA))

# A pull in another process that stops half-way through a blob, as `kill -9` finds it.
_WRITER = """
import sys
from pathlib import Path
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor
layout = OciLayout.open(Path(sys.argv[1]))
writer = layout.blob_writer(Descriptor("x", sys.argv[2], 4096))
writer.write(b"x" * 100)
print(writer.temp_path, flush=True)
sys.stdin.read()
"""


def _temps(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".pull-*.tmp"))


class TestTempFiles:
    def test_a_writer_never_writes_into_blobs(self, tmp_path: Path) -> None:
        """While a blob downloads its bytes are outside blobs/; after commit no temp is left."""
        layout = OciLayout.open(tmp_path / "oci")
        with layout.blob_writer(DESCRIPTOR) as writer:
            writer.write(DATA)
            assert writer.temp_path.parent == layout.root / TEMP_DIR
            assert list(layout.blobs_dir.rglob("*.tmp")) == []
            writer.commit()
        assert not (layout.root / TEMP_DIR).exists()

    def test_a_kill_9_leftover_is_swept_when_the_layout_is_opened(self, tmp_path: Path) -> None:
        """A writer killed with SIGKILL leaves its temp file; the next open removes it."""
        root = tmp_path / "oci"
        argv = [sys.executable, "-c", _WRITER, str(root), DESCRIPTOR.digest]
        with subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as proc:
            try:
                assert proc.stdout is not None
                temp = Path(proc.stdout.readline().strip())
                assert temp.exists()
                OciLayout.open(root)
                assert temp.exists(), "a live writer's temp file must survive a sweep"
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert temp.exists()
        OciLayout.open(root)
        assert _temps(root) == []

    def test_old_versions_temp_files_in_blobs_are_swept(self, tmp_path: Path) -> None:
        """`.pull-*.tmp` files earlier versions left in blobs/ and the root are removed."""
        layout = OciLayout.open(tmp_path / "oci")
        (layout.blobs_dir / ".pull-abc123.tmp").write_bytes(b"partial")
        (layout.root / ".pull-def456.tmp").write_bytes(b"{}")
        OciLayout.open(layout.root)
        assert _temps(layout.root) == []

    def test_a_locked_temp_file_is_kept(self, tmp_path: Path) -> None:
        """A temp file some process still holds the lock on is not touched by a sweep."""
        layout = OciLayout.open(tmp_path / "oci")
        with layout.blob_writer(DESCRIPTOR) as writer:
            writer.write(DATA[:10])
            OciLayout.open(layout.root)
            assert writer.temp_path.exists()
            writer.write(DATA[10:])
            writer.commit()
        assert layout.has_blob(DESCRIPTOR)
