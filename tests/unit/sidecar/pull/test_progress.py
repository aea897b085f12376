"""Progress output: a redrawn line on terminals, plain lines elsewhere."""

from __future__ import annotations

import io

from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.progress import (
    LineProgress,
    NullProgress,
    TerminalProgress,
    progress_for,
)

BLOB = Descriptor("x", "sha256:" + "e" * 64, 3 * 1048576)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    def test_terminal_only_when_isatty(self) -> None:
        """A TTY gets the redrawn line, a pipe plain lines, --quiet nothing."""
        assert isinstance(progress_for(_Tty()), TerminalProgress)
        assert isinstance(progress_for(io.StringIO()), LineProgress)
        assert isinstance(progress_for(_Tty(), quiet=True), NullProgress)

    def test_plain_lines_name_each_blob(self) -> None:
        """Without a terminal every stored blob is one line, no control characters."""
        out = io.StringIO()
        progress = LineProgress(out)
        progress.start(1, BLOB.size, 2)
        progress.advance(BLOB.size)
        progress.blob_done(BLOB)
        progress.finish()
        lines = out.getvalue().splitlines()
        assert lines == [
            "fetching 1 blob(s), 3.0 MiB; 2 already present",
            f"stored {BLOB.digest} (3.0 MiB)",
        ]
        assert "\r" not in out.getvalue()

    def test_terminal_line_counts_blobs_and_bytes(self) -> None:
        """The terminal line is redrawn in place with blobs and MiB done."""
        out = _Tty()
        progress = TerminalProgress(out)
        progress.start(2, 2 * BLOB.size, 0)
        progress.advance(BLOB.size)
        progress.blob_done(BLOB)
        progress.finish()
        text = out.getvalue()
        assert "\r\x1b[K1/2 blobs  3.0/6.0 MiB" in text
        assert text.endswith("\n")
