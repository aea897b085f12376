"""Fixtures for the registry client's tests: scriptable local HTTPS servers, another CA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.harness.certs import TestCA
from tests.harness.https_server import Handler, HTTPSServer

Serve = Callable[..., HTTPSServer]


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """An unrelated CA, for trust-failure tests."""
    return TestCA.create(tmp_path_factory.mktemp("other-ca"), "some other CA")


@pytest.fixture
def serve(test_ca: TestCA) -> Iterator[Serve]:
    """Start servers for this test: serve(handler) for HTTPS, serve(handler, tls=False) for HTTP."""
    with ExitStack() as stack:

        def start(handler: Handler, *, tls: bool = True) -> HTTPSServer:
            return stack.enter_context(HTTPSServer(handler, test_ca if tls else None))

        yield start


@pytest.fixture
def ca_file(test_ca: TestCA, tmp_path: Path) -> Path:
    """The test CA as a PEM file alone in a folder, for tests that point the environment at it."""
    path = tmp_path / "ca.crt"
    path.write_text(test_ca.pem)
    return path
