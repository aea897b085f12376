"""PostgreSQL stopped and started under three replicas with traffic: cached tokens keep
being served by every replica, calls that need the database are UNAVAILABLE with a retry
hint, and everything recovers without a restart: writes, watches (the change feed
reconnects and resyncs) and the periodic-jobs lock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from pullbroker.v1 import deployment_pb2
from pullbroker_client.broker import BrokerCallError

from tests.harness.postgres import PostgresServer
from tests.harness.process import eventually
from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import ReplicaSet
from tests.harness.standard import ALICE, BOB
from tests.integration.backends.test_broker_backends import generic, login
from tests.integration.lifecycle.node import deployment

pytestmark = pytest.mark.integration
DEPLOYED = deployment_pb2.DEPLOYMENT_STATE_DEPLOYED


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: its test stops and starts it."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


class Traffic:
    """Nodes asking every replica for a cached token in a loop; failures are counted."""

    def __init__(self, replicas: ReplicaSet, image: str) -> None:
        self.calls = 0
        self.answered: set[int] = set()
        """Replicas that answered at least once (each then holds the token in memory)."""
        self.phase = "up"
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(replicas, i, image), daemon=True)
            for i in range(len(replicas))
        ]

    def _run(self, replicas: ReplicaSet, index: int, image: str) -> None:
        with replicas.client(index, "node", timeout=10) as node:
            while not self._stop.is_set():
                try:
                    node.issue_pull_token(image, registry="team")
                    self.calls += 1
                    self.answered.add(index)
                except BrokerCallError as exc:
                    self.failures.append(f"{self.phase} replica {index}: {exc.code.name} {exc}")
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


async def test_postgres_stopped_and_started_under_three_replicas(
    make_replicas: Callable[..., ReplicaSet],
    own_postgres: PostgresServer,
    token_registry: TokenAuthRegistry,
) -> None:
    """Stop PostgreSQL while nodes pull through all three replicas and a watch is open, then
    start it again."""
    replicas = make_replicas(3, server=own_postgres, reconcile_interval_seconds=0.5)
    image = f"{token_registry.host}/team/app:v1"
    with replicas.client(0) as admin:
        admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
        admin.create_deployment("web", deployment(image, "team"))
    seen: list[int] = []
    async with replicas.async_client(2) as watcher:

        async def watch() -> None:
            async for item in watcher.watch_deployment("web", timeout=120):
                seen.append(item.state)
                if item.state == DEPLOYED:
                    return

        watching = asyncio.create_task(watch())
        with Traffic(replicas, image) as traffic:
            # Every replica has minted and cached the token before the database goes.
            await asyncio.to_thread(
                eventually,
                lambda: len(traffic.answered) == len(replicas),
                "every replica to answer once",
            )
            own_postgres.stop()
            traffic.phase = "down"
            try:
                await asyncio.to_thread(_while_down, replicas, token_registry)
            finally:
                own_postgres.start()
                traffic.phase = "restarted"
            await asyncio.to_thread(_recovered, replicas, token_registry)
            await asyncio.to_thread(_report, replicas)
            await asyncio.wait_for(watching, 40)
    assert seen[-1] == DEPLOYED, "the watch outlived the outage"
    # While the database is down each token call waits acquire_timeout (1 s) for a
    # connection before answering from memory: fewer calls, none failed.
    assert traffic.calls >= 30
    assert traffic.failures == [], "cached tokens are served through the outage"


def _while_down(replicas: ReplicaSet, token_registry: TokenAuthRegistry) -> None:
    for i in range(len(replicas)):
        with replicas.client(i) as admin, pytest.raises(BrokerCallError) as caught:
            admin.create_registry(
                generic(f"down-{i}", token_registry, f"down{i}/*"), login(token_registry, BOB)
            )
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert caught.value.retry_after is not None
    time.sleep(1.0)  # traffic keeps flowing while the database is gone


def _report(replicas: ReplicaSet) -> None:
    """A node reports through replica 1, retrying UNAVAILABLE as clients do (the pool may
    still be replacing connections the restart broke)."""

    def reported() -> bool:
        with replicas.client(1, "node") as node:
            try:
                node.report_deployment_status("deployments/web", DEPLOYED, "sha256:" + "b" * 64)
            except BrokerCallError as exc:
                if exc.code is not grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
        return True

    eventually(reported, "the report to be taken", timeout=20)


def _recovered(replicas: ReplicaSet, token_registry: TokenAuthRegistry) -> None:
    def creates_everywhere() -> bool:
        try:
            for i in range(len(replicas)):
                with replicas.client(i) as admin:
                    admin.create_registry(
                        generic(f"after-{i}", token_registry, f"after{i}/*"),
                        login(token_registry, BOB),
                    )
        except BrokerCallError:
            return False
        return True

    eventually(creates_everywhere, "every replica to write again", timeout=30)
    with replicas.client(0) as admin:
        names = sorted(r.display_name for r in admin.iter_registries())
    assert names == ["after-0", "after-1", "after-2", "team"], "nothing half-written"
