"""Replicas: a token storm over 3 replicas beside the same storm on 1, and registry writes and
reads on PostgreSQL beside SQLite, all in one run on one machine.

(a) STORM IssuePullToken calls, CONCURRENCY at a time, through one AsyncBrokerClient: once
    given all three replicas' addresses (round_robin), once given replica 0's alone; the two
    alternate over ROUNDS rounds, each on a repository not asked for before, so every storm
    starts on cold token caches. Reported: calls/s and p99 (medians over rounds), their
    ratio, failed calls, and the upstream token requests each storm made, counted at the
    harness token server (target: at most one per replica).
(b) CreateRegistry then GetRegistry of OPS registries (CONCURRENCY_DB at a time, through an
    admin client) on a replica using PostgreSQL and on a broker using SQLite files, same
    TLS, policy and local secret backend; alternating rounds, medians, PostgreSQL/SQLite.

    python -m bench replicas          (or: python -m bench.replica_bench)

Two shared cores run the load generator, the replicas, PostgreSQL and the registry alike:
more replicas cannot add cores here, so read (a) as "the fleet costs no throughput and
keeps the upstream at one request per replica", not as a scaling figure.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import (
    AsyncBrokerClient,
    BrokerCallError,
    BrokerClient,
    BrokerTarget,
    basic_credential,
)
from pullbroker_client.secret import Secret

from tests.harness.postgres import PostgresServer
from tests.harness.registry import TokenAuthRegistry
from tests.harness.replicas import NO_TOKEN_LIMIT, Replica, ReplicaSet
from tests.harness.standard import ALICE, add_standard_users

STORM = 10_000
CONCURRENCY = 32
ROUNDS = 3
OPS = 300
CONCURRENCY_DB = 8
# The storm from one node identity is unlimited, and calls wait for a pooled connection as
# long as the product's default, not the test harness's fail-fast second.
SETTINGS = {**NO_TOKEN_LIMIT, "database": {"acquire_timeout_seconds": 3}}


@dataclass
class Run:
    """One measured batch: latencies of the calls that succeeded, wall time, failures."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0
    upstream: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _batch(count: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> Run:
    """`count` calls of `call(i)`, `concurrency` at a time."""
    run = Run()
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            try:
                await call(i)
            except BrokerCallError:
                run.failures += 1
                continue
            run.latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - began
    return run


async def _storm(fleet: ReplicaSet, address: str, image: str, registry: TokenAuthRegistry) -> Run:
    server = registry.token_server
    before = server.count(user=ALICE)
    async with AsyncBrokerClient(BrokerTarget(address, fleet.tls("node")), timeout=30) as node:
        run = await _batch(STORM, CONCURRENCY, lambda _: node.issue_pull_token(image))
    run.upstream = server.count(user=ALICE) - before
    return run


def _storms(fleet: ReplicaSet, registry: TokenAuthRegistry) -> dict[str, list[Run]]:
    sides = {"3 replicas": fleet.address, "1 replica": fleet.replicas[0].address}
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    for round_ in range(ROUNDS):
        for name, address in sides.items():
            image = f"{registry.host}/team/storm-{round_}-{name[0]}:v1"
            runs[name].append(asyncio.run(_storm(fleet, address, image, registry)))
    return runs


async def _registry_ops(fleet: ReplicaSet, address: str, url: str, tag: str) -> tuple[Run, Run]:
    names: dict[int, str] = {}

    async with AsyncBrokerClient(BrokerTarget(address, fleet.tls("admin")), timeout=30) as admin:

        async def create(i: int) -> None:
            # Records of one host must not tie (AmbiguousRegistry): a glob each tells them apart.
            record = registry_pb2.Registry(
                display_name=f"{tag}-{i}",
                type=registry_pb2.REGISTRY_TYPE_GENERIC,
                url=url,
                repositories=[f"{tag}-{i}/*"],
            )
            made = await admin.create_registry(record, basic_credential("u", Secret(f"pw{i}")))
            names[i] = made.name

        async def get(i: int) -> None:
            await admin.get_registry(names[i])

        created = await _batch(OPS, CONCURRENCY_DB, create)
        read = await _batch(OPS, CONCURRENCY_DB, get)
    return created, read


def _sqlite_broker(fleet: ReplicaSet) -> Replica:
    """A broker on SQLite files with the fleet's TLS, policy and secret backend settings."""
    settings = yaml.safe_load(fleet.config_path.read_text())
    del settings["database"]
    del settings["local"]  # its own KEK in its home: envelopes live in its own SQLite file
    config = fleet.config_path.with_name("sqlite.yaml")
    config.write_text(yaml.safe_dump(settings))
    sqlite = Replica(0, fleet.root / "sqlite", config)
    sqlite.start()
    return sqlite


def _databases(fleet: ReplicaSet, sqlite: Replica, url: str) -> dict[str, list[tuple[Run, Run]]]:
    sides = {"PostgreSQL": fleet.replicas[0].address, "SQLite": sqlite.address}
    runs: dict[str, list[tuple[Run, Run]]] = {name: [] for name in sides}
    for round_ in range(ROUNDS):
        for name, address in sides.items():
            runs[name].append(asyncio.run(_registry_ops(fleet, address, url, f"r{round_}")))
    return runs


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _print_storms(runs: dict[str, list[Run]]) -> None:
    print(
        f"(a) {STORM:,} IssuePullToken calls, {CONCURRENCY} at a time, one client; {ROUNDS} rounds"
    )
    print(f"{'target':<12}{'calls/s':>10}{'p99 ms':>9}{'failed':>8}  upstream requests per storm")
    for name, side in runs.items():
        rate = _median([r.rate for r in side])
        p99 = _median([r.p99_ms for r in side])
        failed = sum(r.failures for r in side)
        upstream = ", ".join(str(r.upstream) for r in side)
        print(f"{name:<12}{rate:>10,.0f}{p99:>9.1f}{failed:>8}  {upstream}")
    three, one = runs["3 replicas"], runs["1 replica"]
    ratio = _median([a.rate / b.rate for a, b in zip(three, one, strict=True) if b.rate])
    verdict = "meets" if all(r.upstream <= 3 for r in three) else "MISSES"
    print(f"3-replica/1-replica throughput ratio: {ratio:.2f} (median of per-round ratios)")
    print(f"upstream requests per 3-replica storm <= 3: {verdict}")


def _print_databases(runs: dict[str, list[tuple[Run, Run]]]) -> None:
    print(f"\n(b) {OPS} CreateRegistry then {OPS} GetRegistry, {CONCURRENCY_DB} at a time")
    print(f"{'store':<12}{'create/s':>10}{'p99 ms':>9}{'get/s':>10}{'p99 ms':>9}")
    medians: dict[str, tuple[float, float]] = {}
    for name, side in runs.items():
        create = _median([c.rate for c, _ in side])
        get = _median([g.rate for _, g in side])
        medians[name] = (create, get)
        c99 = _median([c.p99_ms for c, _ in side])
        g99 = _median([g.p99_ms for _, g in side])
        print(f"{name:<12}{create:>10,.0f}{c99:>9.1f}{get:>10,.0f}{g99:>9.1f}")
    (pc, pg), (sc, sg) = medians["PostgreSQL"], medians["SQLite"]
    print(
        f"PostgreSQL/SQLite throughput: CreateRegistry {pc / sc if sc else 0:.2f}, "
        f"GetRegistry {pg / sg if sg else 0:.2f}"
    )


def _seed(fleet: ReplicaSet, registry: TokenAuthRegistry) -> None:
    record = registry_pb2.Registry(
        display_name="bench",
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=registry.url,
        registry_ca_pem=registry.ca_pem,
    )
    with BrokerClient(fleet.target_all("admin"), timeout=30) as admin:
        admin.create_registry(record, basic_credential(ALICE, Secret(registry.users[ALICE])))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pb-replica-bench-") as tmp:
        root = Path(tmp)
        registry = TokenAuthRegistry(root / "registry")
        add_standard_users(registry)
        registry.start()
        postgres = PostgresServer()
        fleet = sqlite = None
        try:
            fleet = ReplicaSet(root / "fleet", postgres, settings=SETTINGS).start()
            _seed(fleet, registry)
            _print_storms(_storms(fleet, registry))
            sqlite = _sqlite_broker(fleet)
            _print_databases(_databases(fleet, sqlite, registry.url))
        finally:
            for running in (fleet, sqlite):
                if running is not None:
                    running.stop()
            postgres.close()
            registry.stop()


if __name__ == "__main__":
    main()
