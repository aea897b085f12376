"""The replica harness itself: N processes, one config, one database, shared TLS files."""

from __future__ import annotations

import pytest
from pullbroker_client.broker import BrokerCallError

from tests.harness.replicas import ReplicaSet

pytestmark = pytest.mark.integration


def test_replicas_serve_one_fleet_and_die_by_pid(replicas: ReplicaSet) -> None:
    """Each replica answers on its own port with the shared CA; kill_9 ends one (by PID)
    while the others keep serving; a restarted replica keeps its address."""
    assert len(set(replicas.addresses)) == 3
    assert {r.home.root for r in replicas.replicas}.isdisjoint({replicas.shared.root})
    for i in range(3):
        with replicas.client(i) as admin:
            assert list(admin.iter_registries()) == []
    pid = replicas[1].pid
    replicas.kill_9(1)
    assert not replicas[1].running
    assert pid is not None
    with replicas.client(1, timeout=2) as gone, pytest.raises(BrokerCallError):
        list(gone.iter_registries())
    with replicas.client(2) as admin:
        assert list(admin.iter_registries()) == []
    replicas[1].start()
    with replicas.client(1) as admin:
        assert list(admin.iter_registries()) == []
