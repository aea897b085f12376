"""Start and stop helper processes by PID, reliably, even when a test fails or pytest exits."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest


class HarnessError(RuntimeError):
    """The test harness could not start or drive a real component."""


_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()

MISSING_TOOL_HINT = (
    "run `make debs` (installs docker-registry, apache2-utils, skopeo, umoci, postgresql)"
)


def require_tool(name: str) -> str:
    """The absolute path of a tool, or HarnessError telling how to install it."""
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"`{name}` is not installed: {MISSING_TOOL_HINT}")
    return path


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output appended to `log_path`, tracked for atexit."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes] | None, *, timeout: float = 5.0) -> None:
    """SIGTERM the process (its PID only), wait, SIGKILL if it lingers; idempotent."""
    if proc is None:
        return
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    else:
        proc.wait()


def _stop_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        stop(proc, timeout=2.0)


atexit.register(_stop_all)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `check()` is true (polling), or fail the test naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
