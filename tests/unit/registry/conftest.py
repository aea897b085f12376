"""Fixtures for the registry client's tests: test CAs and scriptable local HTTPS servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.unit.registry.servers import Handler, HTTPSServer, LocalCA, make_ca

Serve = Callable[..., HTTPSServer]


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """The CA the test servers' certificates chain to (localhost, registry.test, 127.0.0.1)."""
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """An unrelated CA, for trust-failure tests."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), common_name="some other CA")


@pytest.fixture
def serve(local_ca: LocalCA) -> Iterator[Serve]:
    """Start servers for this test: serve(handler) for HTTPS, serve(handler, tls=False) for HTTP."""
    with ExitStack() as stack:

        def start(handler: Handler, *, tls: bool = True) -> HTTPSServer:
            return stack.enter_context(HTTPSServer(handler, local_ca if tls else None))

        yield start


@pytest.fixture
def ca_file(local_ca: LocalCA, tmp_path: Path) -> Path:
    """The test CA as a PEM file, for tests that point environment variables at it."""
    path = tmp_path / "ca.crt"
    path.write_text(local_ca.ca_pem)
    return path
