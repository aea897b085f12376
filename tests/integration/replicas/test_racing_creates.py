"""Records that would tie on one host, created at once through different replicas: the
check and the insert are one step in the database, so one record is stored and the rest
are refused, whichever replica each create reached."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from pullbroker_client.broker import BrokerCallError

from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import ReplicaSet
from tests.harness.standard import ALICE
from tests.integration.backends.test_broker_backends import generic, login

pytestmark = pytest.mark.integration

PER_REPLICA = 2
ROUNDS = 3


def _race(replicas: ReplicaSet, registry: TokenAuthRegistry, tag: str) -> list[Any]:
    """PER_REPLICA creates through each replica of glob-less records (which tie) on
    `registry`'s host, released together: each outcome is the created record or the
    BrokerCallError."""
    count = PER_REPLICA * len(replicas)
    clients = [replicas.client(i % len(replicas)) for i in range(count)]
    start = threading.Barrier(count)

    def create(i: int) -> Any:
        start.wait(timeout=30)
        try:
            return clients[i].create_registry(
                generic(f"{tag}-{i}", registry), login(registry, ALICE)
            )
        except BrokerCallError as exc:
            return exc

    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(create, range(count)))
    finally:
        for client in clients:
            client.close()


def _describe(outcome: Any) -> str:
    if isinstance(outcome, BrokerCallError):
        return f"{outcome.code.name}: {outcome.message}"
    return f"created {outcome.display_name}"


def _secret_keys(replicas: ReplicaSet) -> set[str]:
    """The keys the local secret backend holds versions of, in the shared database."""
    rows = replicas.postgres.execute(replicas.database, "SELECT key FROM secret_envelopes")
    return {str(key) for (key,) in rows}


def test_racing_tying_creates_through_replicas_store_one(
    replicas: ReplicaSet, token_registry: TokenAuthRegistry
) -> None:
    """Six creates of tying records, two through each replica, at once, over a few rounds:
    one record each round; the others FAILED_PRECONDITION naming the fix (AmbiguousRegistry);
    the only secret stored is the winner's."""
    for round_ in range(ROUNDS):
        outcomes = _race(replicas, token_registry, f"r{round_}")
        refused = [o for o in outcomes if isinstance(o, BrokerCallError)]
        created = [o for o in outcomes if not isinstance(o, BrokerCallError)]
        assert len(created) == 1, [_describe(o) for o in outcomes]
        assert {e.code for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert all("ambiguous with registry" in e.message for e in refused), refused
        # The fix is named: globs for a READY rival, a retry while the rival is PENDING.
        assert all(
            "--repositories" in e.message or "Retry in a minute" in e.message for e in refused
        ), refused
        winner = created[0]
        with replicas.client(round_ % len(replicas)) as admin:
            assert [r.name for r in admin.iter_registries()] == [winner.name]
            assert _secret_keys(replicas) == {winner.name.removeprefix("registries/")}
            admin.delete_registry(winner.name, winner.etag)
        assert _secret_keys(replicas) == set()
