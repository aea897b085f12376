"""Fixtures for the sidecar's tests: recording HTTPS servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer


@pytest.fixture
def server(test_ca: TestCA) -> Iterator[HTTPSServer]:
    """The registry: HTTPS on 127.0.0.1, canned answers, every request recorded."""
    srv = HTTPSServer(tls=test_ca, name="registry").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def other(test_ca: TestCA) -> Iterator[HTTPSServer]:
    """Another origin (same address, another port): object storage a registry redirects to."""
    srv = HTTPSServer(tls=test_ca, name="storage").start()
    try:
        yield srv
    finally:
        srv.stop()
