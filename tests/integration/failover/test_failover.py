"""Clients that fail over: a replica killed with SIGKILL in the middle of a storm of node
token requests through one multi-address client costs no failed request, and the CLI
works when the first broker it is given is down."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import (
    AsyncBrokerClient,
    BrokerCallError,
    BrokerClient,
    basic_credential,
)
from pullbroker_client.secret import Secret
from pullbroker_sidecar.daemon.channel import BrokerChannel, ChannelConfig

from tests.harness.process import free_port
from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import ReplicaSet
from tests.harness.standard import ALICE
from tests.harness.token_server import TokenServer

pytestmark = pytest.mark.integration

STORM = 1_000
CONCURRENCY = 32
KILL_AFTER = 300


def add_registry(fleet: ReplicaSet, registry: TokenAuthRegistry, name: str = "acme") -> str:
    """alice's credential on the token registry, created through the fleet; the image."""
    record = registry_pb2.Registry(
        display_name=name,
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=registry.url,
        registry_ca_pem=registry.ca_pem,
    )
    with BrokerClient(fleet.target_all("admin"), timeout=20) as admin:
        admin.create_registry(record, basic_credential(ALICE, Secret(registry.users[ALICE])))
    return f"{registry.host}/team/app:v1"


async def storm(fleet: ReplicaSet, image: str, victim: int) -> tuple[int, list[BrokerCallError]]:
    """STORM IssuePullToken calls, CONCURRENCY at a time, through one client over every
    replica; replica `victim` is killed after KILL_AFTER of them returned."""
    done = 0
    failures: list[BrokerCallError] = []
    queue = iter(range(STORM))

    async with AsyncBrokerClient(fleet.target_all("node"), timeout=20) as node:

        async def worker() -> None:
            nonlocal done
            for _ in queue:
                try:
                    issued = await node.issue_pull_token(image)
                    assert issued.token.reveal()
                except BrokerCallError as exc:
                    failures.append(exc)
                done += 1
                if done == KILL_AFTER:
                    fleet.kill_9(victim)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 120)
    return done, failures


class TestReplicaKilledMidStorm:
    def test_no_request_fails(
        self, fleet: ReplicaSet, token_registry: TokenAuthRegistry, token_server: TokenServer
    ) -> None:
        """1,000 node requests over 3 replicas, one killed -9 after 300: every request gets a
        token; the killed replica had served part of the storm; at most one upstream token
        request per replica."""
        image = add_registry(fleet, token_registry)
        token_server.clear_requests()
        victim = 1
        done, failures = asyncio.run(storm(fleet, image, victim))
        assert done == STORM
        assert [f"{f.code.name}: {f.message}" for f in failures] == []
        assert fleet.replicas[victim].exit_code == -9
        assert all(replica.issued() > 0 for replica in fleet.replicas)
        assert token_server.count(user=ALICE) <= len(fleet)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(sys.executable).with_name("pullbroker"))
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    return subprocess.run(
        [cli, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


class TestCliWithSeveralBrokers:
    def test_first_broker_down(self, fleet: ReplicaSet, token_registry: TokenAuthRegistry) -> None:
        """`--broker DOWN,UP`: a port nobody listens on and a replica killed -9 come first;
        registry list and health answer from the live one."""
        add_registry(fleet, token_registry, "listed")
        fleet.kill_9(0)
        down = f"127.0.0.1:{free_port()},{fleet.replicas[0].address}"
        brokers = f"{down},{fleet.replicas[2].address}"
        home = ("--home", str(fleet.shared.root))
        listed = run_cli("registry", "list", "--broker", brokers, *home, "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert "listed" in json.dumps(json.loads(listed.stdout))
        health = run_cli("health", "--broker", brokers, *home, "--service", "")
        assert health.returncode == 0, health.stderr
        assert "SERVING" in health.stdout

    def test_every_broker_down_says_so(self, fleet: ReplicaSet) -> None:
        """With nothing listening the error is one line naming the addresses, exit 1."""
        brokers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        failed = run_cli("registry", "list", "--broker", brokers, "--home", str(fleet.shared.root))
        assert failed.returncode == 1
        assert "UNAVAILABLE" in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1


class TestSidecarDaemonChannel:
    def test_daemon_channel_with_a_dead_replica_first(
        self, fleet: ReplicaSet, token_registry: TokenAuthRegistry
    ) -> None:
        """The daemon's BrokerChannel (what the credential helpers reach through the socket)
        given `--broker KILLED,UP,UP` issues tokens without one retry of its own."""
        image = add_registry(fleet, token_registry)
        fleet.kill_9(0)

        async def issue() -> int:
            channel = BrokerChannel(ChannelConfig(fleet.shared, address=fleet.address))
            await channel.start()
            try:
                for _ in range(20):
                    assert (await channel.issue_pull_token(image)).token.reveal()
                return channel.retries
            finally:
                await channel.close()

        assert asyncio.run(issue()) == 0
