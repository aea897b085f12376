"""Fixtures for the token-endpoint kinds: one private token registry, a fresh broker core."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness.certs import TestCA
from tests.harness.process import HarnessError, require_tool
from tests.harness.registry import TokenAuthRegistry
from tests.integration.kinds.world import Seeded, World, build_world, seed_kinds_registry


@pytest.fixture(scope="package")
def kinds_registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Seeded]:
    """A token registry of our own (tests inject 429s into its token server), seeded."""
    try:
        for tool in ("docker-registry", "skopeo", "htpasswd"):
            require_tool(tool)
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    registry = TokenAuthRegistry(tmp_path_factory.mktemp("kinds-registry"), test_ca)
    registry.start()
    try:
        yield seed_kinds_registry(registry, tmp_path_factory.mktemp("kinds-layouts"))
    finally:
        registry.stop()


@pytest.fixture
def seeded(kinds_registry: Seeded) -> Iterator[Seeded]:
    """The kinds registry with its token server's request log and failures reset."""
    server = kinds_registry.registry.token_server
    server.clear_failures()
    server.clear_requests()
    try:
        yield kinds_registry
    finally:
        server.clear_failures()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A fresh broker core (its own back-off state, cache and store)."""
    built = build_world(tmp_path)
    try:
        yield built
    finally:
        await built.close()
