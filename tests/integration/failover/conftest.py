"""The fleet fixture: REPLICAS `pullbroker serve` processes on one PostgreSQL (fleet.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.fleet import Fleet, start_fleet
from tests.harness.postgres import PostgresServer


@pytest.fixture
def fleet(tmp_path: Path, postgres: PostgresServer) -> Iterator[Fleet]:
    """REPLICAS replicas on a fresh database; stopped (SIGTERM) afterwards."""
    made = start_fleet(tmp_path, postgres)
    try:
        yield made
    finally:
        made.stop()
