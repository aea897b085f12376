"""One audit trail for every replica: each replica's batches land in the append-only
`audit_events` table, which refuses UPDATE and DELETE, holds no secret, and
`pullbroker audit tail` (through any replica) reads all of it."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from pullbroker_client.broker import basic_credential
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_text, new_canary
from tests.harness.process import eventually
from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import PULLBROKER, ReplicaSet
from tests.harness.standard import ALICE
from tests.integration.backends.test_broker_backends import generic, login

pytestmark = pytest.mark.integration


def _rows(replicas: ReplicaSet) -> list[tuple[object, ...]]:
    return replicas.postgres.execute(
        replicas.database, "SELECT action, replica, reason, identity FROM audit_events"
    )


def test_every_replica_writes_one_append_only_trail(
    replicas: ReplicaSet, token_registry: TokenAuthRegistry
) -> None:
    """Writes and token issues through three replicas land in one table, from three
    replicas; no credential or token in it; UPDATE and DELETE are refused; the CLI pointed
    at one replica prints all of it."""
    canary = new_canary("audit")
    image = f"{token_registry.host}/team/app:v1"
    with replicas.client(0) as admin:
        admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
        admin.create_registry(
            generic("canary", token_registry, "canary/*"), basic_credential("robot", Secret(canary))
        )
    tokens = []
    for i in (1, 2):
        with replicas.client(i, "node") as node:
            tokens.append(node.issue_pull_token(image, registry="team").token.reveal())

    def from_every_replica() -> bool:
        return len({row[1] for row in _rows(replicas)}) == 3

    eventually(from_every_replica, "events of all three replicas in audit_events")
    dump = "\n".join(str(row) for row in _rows(replicas))
    for needle in (canary, *tokens):
        assert not find_in_text(dump, needle), "a secret reached the audit trail"
    for statement in ("UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(psycopg.Error, match="append-only"):
            replicas.postgres.execute(replicas.database, statement)
    _tail_through_one_replica(replicas, len(_rows(replicas)))


def _tail_through_one_replica(replicas: ReplicaSet, expected: int) -> None:
    tls = replicas.tls("admin")
    argv = [PULLBROKER, "audit", "tail", "-n", "1000", "-o", "json"]
    argv += ["--broker", replicas[2].address, "--ca", str(tls.ca), "--cert", str(tls.cert)]
    argv += ["--key", str(tls.key), "--home", str(replicas.root / "no-home")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) == expected
    assert len({e["replica"] for e in events}) == 3
    assert {"registry.create", "token.issue"} <= {e["action"] for e in events}
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences)
