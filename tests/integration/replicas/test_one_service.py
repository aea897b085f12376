"""Three replicas are one service: what one writes the others read at once, conflicting
updates through different replicas have one winner, and a watch on any replica sees
status reports made on any other (LISTEN/NOTIFY, not the resync re-read)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pullbroker.v1 import deployment_pb2, registry_pb2, registry_pb2_grpc
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.tls import channel_credentials
from pullbroker_service.api.status import CURRENT_ETAG_KEY

from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import ReplicaSet
from tests.harness.standard import ALICE, BOB
from tests.integration.backends.test_broker_backends import generic, login
from tests.integration.lifecycle.node import deployment

pytestmark = pytest.mark.integration

DEPLOYED = deployment_pb2.DEPLOYMENT_STATE_DEPLOYED
PENDING = deployment_pb2.DEPLOYMENT_STATE_PENDING_DEPLOY


def test_create_read_update_on_different_replicas(
    replicas: ReplicaSet, token_registry: TokenAuthRegistry
) -> None:
    """Created on replica 0, read and updated on 1, read back on 2 at once; a name created
    on one is taken on the others."""
    with replicas.client(0) as zero, replicas.client(1) as one, replicas.client(2) as two:
        created = zero.create_registry(
            generic("team", token_registry), login(token_registry, ALICE)
        )
        assert one.get_registry(created.name) == created
        changed = registry_pb2.Registry(
            name=created.name, etag=created.etag, allow_basic_passthrough=True
        )
        updated = one.update_registry(changed, ["allow_basic_passthrough"])
        assert updated.etag != created.etag
        assert two.get_registry(created.name) == updated
        assert [r.name for r in two.iter_registries()] == [created.name]
        with pytest.raises(BrokerCallError, match="already exists") as taken:
            two.create_registry(generic("team", token_registry), login(token_registry, BOB))
        assert taken.value.code is grpc.StatusCode.ALREADY_EXISTS


def _update_raw(replicas: ReplicaSet, index: int, name: str, etag: str) -> tuple[str, Any]:
    """UpdateRegistry through replica `index` on a raw channel, to read trailing metadata:
    ("ok", new etag) or (status code name, current-etag sent back)."""
    creds = channel_credentials(replicas.tls("admin"))
    with grpc.secure_channel(replicas[index].address, creds) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        request = registry_pb2.UpdateRegistryRequest(
            registry=registry_pb2.Registry(
                name=name, etag=etag, allow_basic_passthrough=bool(index % 2)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["allow_basic_passthrough"]),
        )
        try:
            return "ok", stub.UpdateRegistry(request, timeout=20).etag
        except grpc.RpcError as exc:
            call: Any = exc
            trailing = {str(k): v for k, v in call.trailing_metadata() or ()}
            return call.code().name, trailing.get(CURRENT_ETAG_KEY)


def test_conflicting_updates_through_replicas_one_wins(
    replicas: ReplicaSet, token_registry: TokenAuthRegistry
) -> None:
    """Updates from one etag through each replica at once: one wins; the others get ABORTED
    carrying the winner's etag (current-etag), which the next read confirms."""
    with replicas.client(0) as admin:
        created = admin.create_registry(
            generic("team", token_registry), login(token_registry, ALICE)
        )
    for _ in range(3):  # a few rounds: the race must hold however the calls interleave
        with replicas.client(0) as admin:
            etag = admin.get_registry(created.name).etag
        with ThreadPoolExecutor(len(replicas)) as pool:
            calls = [
                pool.submit(_update_raw, replicas, i, created.name, etag)
                for i in range(len(replicas))
            ]
            outcomes = [call.result() for call in calls]
        winners = [value for code, value in outcomes if code == "ok"]
        assert len(winners) == 1, outcomes
        losers = [(code, value) for code, value in outcomes if code != "ok"]
        assert losers == [("ABORTED", winners[0])] * (len(replicas) - 1)
        with replicas.client(2) as admin:
            assert admin.get_registry(created.name).etag == winners[0]


async def test_watch_on_one_replica_sees_reports_made_on_another(
    replicas: ReplicaSet, token_registry: TokenAuthRegistry
) -> None:
    """Create on replica 0, watch on 2, a node reports through 1: the watcher sees the
    report within a second (the resync re-read is 30 s away)."""
    image = f"{token_registry.host}/team/app:v1"
    with replicas.client(0) as admin:
        admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
        admin.create_deployment("web", deployment(image, "team"))
    seen: list[tuple[int, float]] = []
    first = asyncio.Event()
    async with replicas.async_client(2) as watcher:

        async def watch() -> None:
            async for item in watcher.watch_deployment("web", timeout=60):
                seen.append((item.state, time.monotonic()))
                first.set()
                if item.state == DEPLOYED:
                    return

        watching = asyncio.create_task(watch())
        await asyncio.wait_for(first.wait(), 20)
        with replicas.client(1, "node") as node:
            reported_at = time.monotonic()
            await asyncio.to_thread(
                node.report_deployment_status, "deployments/web", DEPLOYED, "sha256:" + "a" * 64
            )
        await asyncio.wait_for(watching, 20)
    assert [state for state, _ in seen] == [PENDING, DEPLOYED]
    assert seen[-1][1] - reported_at < 1.5, "woken by the notification, not the re-read"
