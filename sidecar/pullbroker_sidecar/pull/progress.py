"""Pull progress for people: one redrawn line on a terminal, plain lines otherwise.

Called from download threads, so every method takes a lock; the terminal line is redrawn
at most ten times a second.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, TextIO

from pullbroker_sidecar.pull.manifest import Descriptor

_REDRAW_EVERY = 0.1
_MIB = 1024 * 1024


class Progress(Protocol):
    """What the engine reports as it goes."""

    def note(self, message: str) -> None:
        """A one-off step (resolved manifest, chosen platform)."""

    def start(self, blobs: int, total_bytes: int, present: int, resumed: int = 0) -> None:
        """Downloads begin: `blobs` to fetch (`resumed` of their bytes kept from an
        interrupted pull), `present` blobs already in the layout."""

    def advance(self, n: int) -> None:
        """`n` more bytes arrived."""

    def blob_done(self, descriptor: Descriptor) -> None:
        """One blob verified and stored."""

    def finish(self) -> None:
        """Every blob is stored (or the pull failed); end the display."""


class NullProgress:
    """Reports nothing (`--quiet`)."""

    def note(self, message: str) -> None:
        pass

    def start(self, blobs: int, total_bytes: int, present: int, resumed: int = 0) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def blob_done(self, descriptor: Descriptor) -> None:
        pass

    def finish(self) -> None:
        pass


class LineProgress:
    """One plain line per step and per blob, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def note(self, message: str) -> None:
        self._print(message)

    def start(self, blobs: int, total_bytes: int, present: int, resumed: int = 0) -> None:
        self._print(
            f"fetching {blobs} blob(s), {_mib(total_bytes)}; {present} already present"
            + (f"; resuming {_mib(resumed)} kept from an interrupted pull" if resumed else "")
        )

    def advance(self, n: int) -> None:
        pass

    def blob_done(self, descriptor: Descriptor) -> None:
        self._print(f"stored {descriptor.digest} ({_mib(descriptor.size)})")

    def finish(self) -> None:
        pass

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream, flush=True)


class TerminalProgress:
    """A single status line redrawn in place: blobs done, bytes, rate."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._blobs = self._done_blobs = 0
        self._total = self._bytes = self._resumed = 0
        self._started = self._drawn = 0.0

    def note(self, message: str) -> None:
        with self._lock:
            self._stream.write(f"\r\x1b[K{message}\n")
            self._stream.flush()

    def start(self, blobs: int, total_bytes: int, present: int, resumed: int = 0) -> None:
        with self._lock:
            self._blobs, self._total = blobs, total_bytes
            self._bytes = self._resumed = resumed
            self._started = time.monotonic()
            self._draw(force=True)

    def advance(self, n: int) -> None:
        with self._lock:
            self._bytes += n
            self._draw(force=False)

    def blob_done(self, descriptor: Descriptor) -> None:
        with self._lock:
            self._done_blobs += 1
            self._draw(force=True)

    def finish(self) -> None:
        with self._lock:
            self._draw(force=True)
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_EVERY:
            return
        self._drawn = now
        elapsed = max(now - self._started, 1e-6)
        rate = (self._bytes - self._resumed) / elapsed / _MIB
        self._stream.write(
            f"\r\x1b[K{self._done_blobs}/{self._blobs} blobs  "
            f"{self._bytes / _MIB:.1f}/{self._total / _MIB:.1f} MiB  {rate:.0f} MiB/s"
        )
        self._stream.flush()


def progress_for(stream: TextIO, *, quiet: bool = False) -> Progress:
    """Terminal progress when `stream` is a TTY, plain lines otherwise, nothing when quiet."""
    if quiet:
        return NullProgress()
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if isatty is not None and isatty() else LineProgress(stream)


def _mib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < _MIB else f"{n / _MIB:.1f} MiB"
