"""Periodic jobs on exactly one replica, moving when it dies; tokens only in each replica's
memory (a storm over R replicas costs at most R upstream token requests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.harness.canary import find_in_text
from tests.harness.process import eventually
from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import ReplicaSet
from tests.harness.standard import ALICE
from tests.harness.token_server import TokenServer
from tests.integration.backends.test_broker_backends import generic, login

pytestmark = pytest.mark.integration

LOCK_TAKEN = "periodic_jobs_lock_acquired"
LOCK_BUSY = "periodic_jobs_lock_busy"
# A create that wrote its record and then died, long ago: the reconciler rolls it back.
PENDING_ROW = """
INSERT INTO registries (id, display_name, kind, url, host, username, registry_ca_pem, region,
    allow_basic_passthrough, credential_version, secret_ref, creator, create_time,
    update_time, etag, state)
VALUES ('{rid}', 'half-made', 'generic', 'https://reg.example', 'reg.example', 'robot', '', '',
    false, 1, NULL, 'spiffe://pullbroker.local/admin', now() - interval '1 hour',
    now() - interval '1 hour', 'e1', 'pending')
"""


def _holders(replicas: ReplicaSet, text: str = LOCK_TAKEN) -> list[int]:
    found = []
    for replica in replicas.replicas:
        log = replica.home.broker_log
        if log.exists() and text in log.read_text(errors="replace"):
            found.append(replica.index)
    return found


def test_reconciler_runs_on_one_replica_and_moves_when_it_dies(
    make_replicas: Callable[..., ReplicaSet],
) -> None:
    """One replica takes the periodic-jobs lock; kill -9 it, and a survivor takes the lock
    and rolls back a PENDING record left behind."""
    replicas = make_replicas(3, reconcile_interval_seconds=0.2, reconcile_grace_seconds=1)
    eventually(lambda: bool(_holders(replicas)), "a replica to take the jobs lock")
    # Every other replica asked for the lock and found it taken: the check below is then
    # about replicas that tried, not ones that had not got round to it.
    eventually(
        lambda: len(_holders(replicas, LOCK_BUSY)) >= len(replicas) - 1,
        "the other replicas to find the lock taken",
    )
    holders = _holders(replicas)
    assert len(holders) == 1, f"the lock is held by one replica, not {holders}"
    leader = holders[0]
    replicas.kill_9(leader)
    replicas.postgres.execute(replicas.database, PENDING_ROW.format(rid="left-behind"))

    def rolled_back() -> bool:
        rows = replicas.postgres.execute(
            replicas.database, "SELECT id FROM registries WHERE id = 'left-behind'"
        )
        return not rows

    eventually(rolled_back, "a survivor to roll the PENDING record back", timeout=20)
    # The pass logs what it rolled back once the whole pass is done, after the delete.
    eventually(lambda: bool(_holders(replicas, "left-behind")), "the rollback's log line")
    survivors = _holders(replicas)
    assert leader in survivors  # its log is still there
    new = [i for i in survivors if i != leader]
    assert len(new) == 1, f"one survivor took over, not {new}"
    assert _holders(replicas, "left-behind") == [new[0]], "the new holder rolled it back"


async def test_token_storm_over_replicas_costs_one_upstream_request_each(
    make_replicas: Callable[..., ReplicaSet],
    token_registry: TokenAuthRegistry,
    token_server: TokenServer,
) -> None:
    """300 concurrent IssuePullToken calls spread over 3 replicas: every one answered, at
    most 3 token requests upstream, and no token in the database."""
    limits = {"issue_pull_token_per_second": 1000.0, "issue_pull_token_burst": 1000}
    replicas = make_replicas(3, rate_limits=limits)
    with replicas.client(0) as admin:
        admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
    token_server.clear_requests()
    image = f"{token_registry.host}/team/app:v1"
    clients = [replicas.async_client(i, "node") for i in range(len(replicas))]
    try:
        calls = [clients[n % len(clients)].issue_pull_token(image) for n in range(300)]
        issued = await asyncio.gather(*calls)
    finally:
        for client in clients:
            await client.close()
    assert len(issued) == 300
    tokens = {t.token.reveal() for t in issued}
    assert 1 <= len(tokens) <= len(replicas), "each replica minted once and shared it"
    upstream = token_server.count(user=ALICE)
    assert 1 <= upstream <= len(replicas), f"{upstream} upstream token requests"
    dump = "\n".join(
        str(row)
        for table in ("registries", "deployments", "audit_events", "secret_envelopes")
        for row in replicas.postgres.execute(replicas.database, f"SELECT * FROM {table}")  # noqa: S608
    )
    assert not any(find_in_text(dump, token) for token in tokens), "a token reached the database"
