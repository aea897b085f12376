"""The fleet fixture: REPLICAS `pullbroker serve` processes on one PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.postgres import PostgresServer
from tests.harness.replicas import NO_TOKEN_LIMIT, ReplicaSet

REPLICAS = 3
# The product's wait for a pooled connection: a storm must not fail on the harness's
# fail-fast setting while every connection is busy.
DATABASE = {"database": {"acquire_timeout_seconds": 3}}


@pytest.fixture
def fleet(tmp_path: Path, postgres: PostgresServer) -> Iterator[ReplicaSet]:
    """REPLICAS replicas on a fresh database, storms from one node unlimited; stopped
    (SIGTERM) afterwards."""
    made = ReplicaSet(tmp_path, postgres, REPLICAS, settings={**NO_TOKEN_LIMIT, **DATABASE})
    with made:
        yield made
