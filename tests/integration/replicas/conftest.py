"""Replica sets for the tests: N `pullbroker serve` processes on one fresh database of the
session's PostgreSQL server, stopped (by PID) after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.postgres import PostgresServer
from tests.harness.replicas import ReplicaSet

pytestmark = pytest.mark.integration


@pytest.fixture
def make_replicas(tmp_path: Path, postgres: PostgresServer) -> Iterator[Callable[..., ReplicaSet]]:
    """Factory: `make_replicas(count=3, **settings)` starts a replica set and returns it."""
    made: list[ReplicaSet] = []

    def make(
        count: int = 3, *, server: PostgresServer | None = None, **settings: Any
    ) -> ReplicaSet:
        root = tmp_path / f"replicas-{len(made)}"
        replicas = ReplicaSet(root, server or postgres, count, settings=settings)
        made.append(replicas)
        return replicas.start()

    try:
        yield make
    finally:
        for replicas in made:
            replicas.stop()


@pytest.fixture
def replicas(make_replicas: Callable[..., ReplicaSet]) -> ReplicaSet:
    """Three replicas with default settings."""
    return make_replicas(3)
