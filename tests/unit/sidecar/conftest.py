"""Fixtures for the sidecar's tests: recording HTTPS servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.certs import TestCA
from tests.unit.sidecar.https_server import RecordingServer


@pytest.fixture
def server(test_ca: TestCA) -> Iterator[RecordingServer]:
    """The registry: HTTPS on 127.0.0.1, canned answers, every request recorded."""
    srv = RecordingServer(test_ca, "registry").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def other(test_ca: TestCA) -> Iterator[RecordingServer]:
    """Another origin (same address, another port): object storage a registry redirects to."""
    srv = RecordingServer(test_ca, "storage").start()
    try:
        yield srv
    finally:
        srv.stop()
