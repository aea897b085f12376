"""Top-level fixtures: the real registry world (tests/harness) shared by every test package.

Broker fixtures live in tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.harness.certs import TestCA
from tests.harness.jwt_signer import KeyIdMode
from tests.harness.process import MISSING_TOOL_HINT
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import (
    StandardImages,
    add_standard_users,
    push_standard_images,
    start_standard_registry,
)
from tests.harness.token_server import TokenServer

_TOOLS = ("docker-registry", "skopeo", "htpasswd")

# Property tests take their example counts from one profile, chosen with HYPOTHESIS_PROFILE:
# "default" for `make test`, "thorough" before a release or after touching a parser, "quick"
# while editing. No deadline: the machine is shared, and a slow example is not a failure.
settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "thorough", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("quick", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _require_tools() -> None:
    # Missing tools fail loudly: a silently skipped integration suite looks like a green one.
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {MISSING_TOOL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A session-wide test CA (ca.crt / ca.key in a temp dir)."""
    return TestCA.create(tmp_path_factory.mktemp("test-ca"), "pullbroker session test CA")


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
) -> Iterator[TokenAuthRegistry]:
    """The shared token-auth registry with the standard users (see tests/harness/standard.py)."""
    _require_tools()
    registry = start_standard_registry(tmp_path_factory.mktemp("token-registry"), test_ca)
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def pushed_images(
    tmp_path_factory: pytest.TempPathFactory, token_registry: TokenAuthRegistry
) -> StandardImages:
    """team/app:v1, team/multi:v1 (two platforms), team/other:v1, public/hello:v1, pushed."""
    return push_standard_images(token_registry, tmp_path_factory.mktemp("seed-layouts"))


@pytest.fixture
def token_server(token_registry: TokenAuthRegistry) -> Iterator[TokenServer]:
    """The shared token server, request log emptied; failures, clock and TTL reset afterwards."""
    server = token_registry.token_server
    server.clear_failures()
    server.clear_requests()
    ttl = server.ttl
    try:
        yield server
    finally:
        server.clear_failures()
        server.clock_offset = 0.0
        server.ttl = ttl


@pytest.fixture
def make_token_registry(
    tmp_path: Path, test_ca: TestCA
) -> Iterator[Callable[..., TokenAuthRegistry]]:
    """Factory for a private token registry (standard users) a test may mutate; stopped after."""
    _require_tools()
    started: list[TokenAuthRegistry] = []

    def make(*, token_ttl: float = 300.0, key_id_mode: KeyIdMode = "x5c") -> TokenAuthRegistry:
        workdir = tmp_path / f"token-registry-{len(started)}"
        registry = TokenAuthRegistry(workdir, test_ca, token_ttl=token_ttl, key_id_mode=key_id_mode)
        started.append(registry)
        add_standard_users(registry)
        return registry.start()

    try:
        yield make
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def tmp_home(tmp_path: Path) -> Path:
    """An empty, private (0700) directory to use as a pullbroker home."""
    home = tmp_path / "pullbroker-home"
    home.mkdir(mode=0o700)
    return home
