"""Where the broker is, which certificate to present, and the one way a channel to it is made.

An address is what a user writes after `--broker` or in broker.json:

- one `HOST:PORT`: gRPC's own DNS resolver; a name with several A/AAAA records (a Kubernetes
  headless Service) is balanced over all of them and re-resolved when a connection drops;
- `H1:P1,H2:P2,...`: several replicas. Host names are resolved when the channel is made
  (IP literals need nothing) and the channel dials `ipv4:A:P,B:P` (or `ipv6:`) itself;
- a gRPC target URI (`dns:///name:port`, `ipv4:...`, `ipv6:...`, `unix:...`): used as it is
  (for `ipv4:`/`ipv6:` lists the TLS name is the first address, as below).

Every channel (BrokerClient, AsyncBrokerClient, `pullbroker health`, the sidecar daemon)
gets the same service config: `round_robin` over every address that answers, and a retry
policy that sends a call failing UNAVAILABLE (a replica killed or restarting) to another
replica, for the calls that are safe to repeat (reads and token issues; never a create,
update, delete or status report, which a replica may have applied before it died).

TLS with several addresses: gRPC checks every replica's certificate against ONE name, the
channel's authority. For a list it is the first host (as written, before resolution), so
each replica's certificate must name that host (cert-manager: one Certificate for all replicas,
with the headless Service's name among dnsNames; the development CA names localhost and
127.0.0.1). The name is set with `grpc.default_authority`, which gRPC also uses as the
`:authority` of each call; `grpc.ssl_target_name_override` is not needed.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pullbroker_client import tracing
from pullbroker_client.broker_errors import REQUEST_ID_KEY
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home
from pullbroker_client.registry.dial import literal, system_resolve
from pullbroker_client.tls import TlsFiles, channel_credentials

URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")

# Calls a replica may have half-done are not here: a create retried on another replica
# would answer ALREADY_EXISTS, an update ABORTED (etag), a delete NOT_FOUND. Each method is
# named (no whole service), so an RPC added later is not retried until someone decides it
# may be; a unit test checks every name against the services' descriptors.
RETRYABLE_METHODS: tuple[tuple[str, str | None], ...] = (
    ("pullbroker.v1.PullService", "IssuePullToken"),
    ("pullbroker.v1.PullService", "IssueRegistryLogin"),
    ("pullbroker.v1.PullService", "ListPullableRegistries"),
    ("pullbroker.v1.AuditService", "ListAuditEvents"),
    ("pullbroker.v1.RegistryService", "GetRegistry"),
    ("pullbroker.v1.RegistryService", "ListRegistries"),
    ("pullbroker.v1.RegistryService", "ListRegistryKinds"),
    ("pullbroker.v1.RegistryService", "TestConnection"),
    ("pullbroker.v1.DeploymentService", "GetDeployment"),
    ("pullbroker.v1.DeploymentService", "ListDeployments"),
    ("pullbroker.v1.DeploymentService", "WatchDeployment"),
    ("pullbroker.v1.PolicyService", "CheckAccess"),
    ("grpc.health.v1.Health", "Check"),
)
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
DEFAULT_TIMEOUT = 30.0
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.enable_retries", 1),
    # Our service config, never one from a DNS TXT record.
    ("grpc.service_config_disable_resolution", 1),
]


def service_config() -> dict[str, Any]:
    """round_robin, and RETRY_POLICY on the calls that are safe to repeat."""
    names = [
        {"service": service, **({"method": method} if method else {})}
        for service, method in RETRYABLE_METHODS
    ]
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
    }


@dataclass(frozen=True)
class ChannelTarget:
    """What gRPC dials, and the name every replica's certificate is checked against."""

    uri: str
    authority: str | None = None

    def options(self) -> list[tuple[str, Any]]:
        options = [*CHANNEL_OPTIONS, ("grpc.service_config", json.dumps(service_config()))]
        if self.authority is not None:
            options.append(("grpc.default_authority", self.authority))
        return options


def split_addresses(address: str) -> tuple[str, ...]:
    """The comma-separated parts of `address`, stripped; ConfigurationError when none."""
    parts = tuple(part.strip() for part in address.split(",") if part.strip())
    if not parts:
        raise ConfigurationError("no broker address given: pass --broker HOST:PORT[,HOST:PORT]")
    return parts


def channel_target(address: str) -> ChannelTarget:
    """The gRPC target for an address as the module docstring describes."""
    if address.startswith(("ipv4:", "ipv6:")):
        # gRPC's default authority here is the whole list, which no certificate names.
        first = split_addresses(address.split(":", 1)[1])[0]
        return ChannelTarget(address, first)
    if address.startswith(URI_SCHEMES):
        return ChannelTarget(address)
    parts = split_addresses(address)
    if len(parts) == 1:
        return ChannelTarget(parts[0])
    hosts = [_host_port(part) for part in parts]
    first_host, first_port = hosts[0]
    return ChannelTarget(_ip_list(hosts, address), f"{_bracket(first_host)}:{first_port}")


def _host_port(part: str) -> tuple[str, int]:
    host, sep, port = part.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"broker address {part!r} is not HOST:PORT (several: HOST:PORT,HOST:PORT)"
        )
    return host, int(port)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ip_list(hosts: list[tuple[str, int]], address: str) -> str:
    """`ipv4:A:P,B:P` (or `ipv6:[A]:P,...`) with every host's addresses, names resolved now.

    A host that does not resolve is left out (logged by the caller's channel errors if all
    fail): one replica missing from DNS must not take the others down with it, which is the
    case a list of replicas exists for.
    """
    by_family: dict[int, list[str]] = {4: [], 6: []}
    covered: dict[int, int] = {4: 0, 6: 0}
    resolved = 0
    unresolved: list[str] = []
    for host, port in hosts:
        found = _resolve(host, port)
        if not found:
            unresolved.append(host)
            continue
        resolved += 1
        for version in (4, 6):
            ips = [ip for ip in found if ipaddress.ip_address(ip).version == version]
            by_family[version] += [f"{_bracket(ip)}:{port}" for ip in ips]
            covered[version] += 1 if ips else 0
    if not resolved:
        raise ConfigurationError(
            f"cannot resolve any broker host of {address!r} ({', '.join(unresolved)}): fix "
            "--broker or broker.json"
        )
    for version in (4, 6):
        if covered[version] == resolved:
            return f"ipv{version}:" + ",".join(dict.fromkeys(by_family[version]))
    raise ConfigurationError(
        f"the broker addresses {address!r} mix IPv4-only and IPv6-only hosts: "
        "list hosts of one family, or give one DNS name that has them all"
    )


def _resolve(host: str, port: int) -> list[str]:
    """The host's addresses; none when it does not resolve."""
    found = literal(host)
    if found is not None:
        return found
    try:
        return system_resolve(host)
    except OSError:
        return []


def secure_channel(address: str, tls: TlsFiles) -> grpc.Channel:
    """A blocking mTLS channel to `address` (one or several replicas, see the module)."""
    target = channel_target(address)
    return grpc.secure_channel(target.uri, channel_credentials(tls), options=target.options())


def aio_secure_channel(address: str, tls: TlsFiles) -> grpc.aio.Channel:
    """The grpc.aio counterpart of secure_channel; with tracing on, every call on it is a
    client span whose W3C traceparent goes to the broker in the call's metadata."""
    target = channel_target(address)
    return grpc.aio.secure_channel(
        target.uri,
        channel_credentials(tls),
        options=target.options(),
        interceptors=tracing.client_interceptors(),  # None while tracing is off
    )


@dataclass(frozen=True)
class BrokerTarget:
    """Where the broker is (one address, a comma-separated list, or a gRPC target URI) and
    which certificate to present."""

    address: str
    tls: TlsFiles

    @classmethod
    def from_home(
        cls,
        home: Home,
        role: str,
        *,
        address: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> BrokerTarget:
        """The home folder's broker.json and tls/ files, each overridable."""
        tls = TlsFiles.from_home(home, role, ca=ca, cert=cert, key=key)
        return cls(address or home.read_address(), tls)

    def channel(self) -> grpc.Channel:
        return secure_channel(self.address, self.tls)

    def aio_channel(self) -> grpc.aio.Channel:
        return aio_secure_channel(self.address, self.tls)


def call_metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_KEY, request_id or uuid.uuid4().hex),)
