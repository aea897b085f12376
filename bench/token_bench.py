"""Token benchmark: IssuePullToken on a cache hit beside a bare grpc.aio echo, same mTLS certs.

The broker (`pullbroker serve`, default logging, metrics on) and the echo server (a grpc.aio
server with only grpc.health.v1, the same server certificate and client CA) each run in a
process of their own; the load generator is this process: 64 concurrent callers on one warm mTLS
grpc.aio channel per server. The two are measured in alternating short rounds, so that the
background load of a shared machine falls on both alike. The table shows calls/s and
p50/p99 latency, and the broker's share of the echo's throughput (target >= 0.8).

    python -m bench token          (or: python -m bench.token_bench [SECONDS])
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pullbroker.v1 import pull_pb2, pull_pb2_grpc, registry_pb2
from pullbroker_client.broker import BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_client.tls import TlsFiles, channel_credentials

from tests.harness.broker_config import write_test_config
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, add_standard_users

CONCURRENCY = 64
SECONDS = 12.0
ROUNDS = 6
WARMUP_SECONDS = 1.0
TARGET_RATIO = 0.8
PULLBROKER = str(Path(sys.executable).with_name("pullbroker"))


@dataclass
class Samples:
    """What one target sustained over all its rounds: call latencies and time spent."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    round_rates: list[float] = field(default_factory=list)
    server_cpu_seconds: float = 0.0

    @property
    def cpu_us_per_call(self) -> float:
        """Server process CPU (all its threads) per call: robust to a busy shared machine."""
        return self.server_cpu_seconds / len(self.latencies) * 1e6 if self.latencies else 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


async def _drive(call: Callable[[], Awaitable[Any]], seconds: float, into: Samples) -> None:
    """CONCURRENCY callers loop on `call` for `seconds`; every call's latency is kept."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    into.latencies += latencies
    into.seconds += elapsed
    into.errors += errors
    into.round_rates.append(len(latencies) / elapsed)


def _caller(channel: grpc.aio.Channel, image: str | None) -> Callable[[], Awaitable[Any]]:
    """IssuePullToken(image) when an image is given, else the health Check echo."""
    if image is not None:
        issue = pull_pb2_grpc.PullServiceStub(channel).IssuePullToken
        token_request = pull_pb2.IssuePullTokenRequest(image=image)
        return lambda: issue(token_request, timeout=10)
    check = health_pb2_grpc.HealthStub(channel).Check
    health_request = health_pb2.HealthCheckRequest()
    return lambda: check(health_request, timeout=10)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0.0 where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """A server to measure: its address and process id."""

    address: str
    pid: int


async def _compare(
    broker_target: Target, echo_target: Target, tls: TlsFiles, image: str, seconds: float
) -> tuple[Samples, Samples]:
    """Alternate short rounds between the two servers, so both see the same background load."""
    credentials = channel_credentials(tls)
    async with (
        grpc.aio.secure_channel(broker_target.address, credentials) as broker_channel,
        grpc.aio.secure_channel(echo_target.address, credentials) as echo_channel,
    ):
        targets = [
            (_caller(broker_channel, image), broker_target.pid, Samples()),
            (_caller(echo_channel, None), echo_target.pid, Samples()),
        ]
        for call, _, _ in targets:
            await _drive(call, WARMUP_SECONDS, Samples())
        for _ in range(ROUNDS):
            for call, pid, samples in targets:
                cpu_before = _cpu_seconds(pid)
                await _drive(call, seconds / ROUNDS, samples)
                samples.server_cpu_seconds += _cpu_seconds(pid) - cpu_before
    return targets[0][2], targets[1][2]


def _start_broker(home: Path) -> subprocess.Popen[bytes]:
    # The registry is on loopback, and 64 callers share one node identity: lift that
    # identity's rate limit, which would otherwise answer most calls RESOURCE_EXHAUSTED.
    config = write_test_config(
        home.parent / "broker.yaml",
        rate_limits={"issue_pull_token_per_second": 1e9, "issue_pull_token_burst": 10**9},
    )
    process = subprocess.Popen(
        [
            PULLBROKER,
            "serve",
            "--home",
            str(home),
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
            # Measured as production runs it: every call counted (infra/metrics.py).
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: _broker_pid(Home(home)) == process.pid, process, "broker")
    return process


def _broker_pid(home: Home) -> int | None:
    try:
        pid = json.loads(home.broker_json.read_text()).get("pid")
    except (OSError, ValueError):
        return None
    return pid if isinstance(pid, int) else None


def _start_echo(home: Path, port_file: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.token_bench", "--echo-server", str(home), str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: port_file.exists() and port_file.read_text().strip() != "", process, "echo")
    return process


def _wait_for(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the {what} server did not start")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _seed(home: Home, registry: TokenAuthRegistry) -> str:
    """Register alice's credential and mint once, so every measured call is a cache hit."""
    record = registry_pb2.Registry(
        display_name="bench",
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=registry.url,
        registry_ca_pem=registry.ca_pem,
    )
    with BrokerClient(BrokerTarget.from_home(home, "admin")) as admin:
        admin.create_registry(record, basic_credential(ALICE, Secret(registry.users[ALICE])))
    image = f"{registry.host}/team/app:v1"
    with BrokerClient(BrokerTarget.from_home(home, "node")) as node:
        node.issue_pull_token(image)
    return image


def _table(broker: Samples, echo: Samples) -> str:
    rows = [("target", "calls/s", "p50 ms", "p99 ms", "server CPU us/call", "calls", "errors")]
    for name, r in (("IssuePullToken (cache hit)", broker), ("grpc.aio echo (health)", echo)):
        rows.append(
            (
                name,
                f"{r.rate:,.0f}",
                f"{r.percentile_ms(0.5):.2f}",
                f"{r.percentile_ms(0.99):.2f}",
                f"{r.cpu_us_per_call:.0f}",
                str(len(r.latencies)),
                str(r.errors),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def run(seconds: float = SECONDS) -> float:
    """Measure both targets and print the table; returns the broker/echo throughput ratio."""
    with tempfile.TemporaryDirectory(prefix="pb-token-bench-") as tmp:
        root = Path(tmp)
        registry = TokenAuthRegistry(root / "registry")
        add_standard_users(registry)
        registry.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            processes.append(_start_broker(root / "home"))
            home = Home(root / "home")
            image = _seed(home, registry)
            processes.append(_start_echo(root / "home", root / "echo.port"))
            broker_target = Target(home.read_address(), processes[0].pid)
            port = (root / "echo.port").read_text().strip()
            echo_target = Target(f"127.0.0.1:{port}", processes[1].pid)
            tls = TlsFiles.from_home(home, "node")
            broker, echo = asyncio.run(_compare(broker_target, echo_target, tls, image, seconds))
        finally:
            for process in processes:
                _stop(process)
            registry.stop()
    ratio = broker.rate / echo.rate if echo.rate else 0.0
    per_round = [b / e for b, e in zip(broker.round_rates, echo.round_rates, strict=True) if e]
    print(
        f"{CONCURRENCY} concurrent callers on one warm mTLS grpc.aio channel per server; "
        f"{ROUNDS} alternating rounds, {seconds:g} s per server in all"
    )
    print(_table(broker, echo))
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(
        f"broker/echo throughput ratio: {ratio:.2f} (per round: "
        f"{', '.join(f'{r:.2f}' for r in per_round)}; {verdict} the {TARGET_RATIO} target)"
    )
    if broker.cpu_us_per_call:
        cpu_ratio = echo.cpu_us_per_call / broker.cpu_us_per_call
        print(f"echo/broker server CPU per call: {cpu_ratio:.2f} (less sensitive to other load)")
    return ratio


async def _echo_server(home: Home, port_file: Path) -> None:
    """A bare grpc.aio server: mTLS with the broker's certificate, health only."""
    from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(home.key("server").read_bytes(), home.cert("server").read_bytes())],
        root_certificates=home.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    """Entry point for `python -m bench token` (and the echo server's own process)."""
    args = argv or []
    if args[:1] == ["--echo-server"]:
        asyncio.run(_echo_server(Home(Path(args[1])), Path(args[2])))
        return
    run(float(args[0]) if args else SECONDS)


if __name__ == "__main__":
    main(sys.argv[1:])
