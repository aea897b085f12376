"""The grpc.aio server: mTLS only, health and reflection always on, bounded requests.

A plaintext port exists only when the developer passes `--insecure-dev-port`; it binds to
127.0.0.1 and its callers get the identity "insecure:dev-port", which the policy denies unless
a rule names it.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# grpc_health re-exports its asyncio servicer as health.aio without declaring it.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from pullbroker.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    pull_pb2,
    pull_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

from pullbroker_service.api.audit_servicer import AuditServicer
from pullbroker_service.api.deployment_servicer import (
    DeploymentReportingServicer,
    DeploymentServicer,
    DeploymentUseCases,
)
from pullbroker_service.api.interceptors import (
    CallGuard,
    GuardedRegistrar,
    RefusalHook,
    RolesFor,
)
from pullbroker_service.api.policy_servicer import AccessChecking, PolicyServicer
from pullbroker_service.api.pull_servicer import PullableListing, PullServicer
from pullbroker_service.api.registry_servicer import RegistriesUseCases, RegistryServicer
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.token_guard import LoginIssuing, TokenIssuing
from pullbroker_service.config.broker import ServerLimits
from pullbroker_service.domain.audit import Action, outcome_for
from pullbroker_service.domain.errors import BrokerError, ListenFailed
from pullbroker_service.domain.identity import Identity
from pullbroker_service.infra.logging import get_logger
from pullbroker_service.store.audit_trail import AuditTrail

REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
PULL_SERVICE = pull_pb2.DESCRIPTOR.services_by_name["PullService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
DEPLOYMENT_SERVICE = deployment_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name
DEPLOYMENT_REPORTING_SERVICE = deployment_pb2.DESCRIPTOR.services_by_name[
    "DeploymentReportingService"
].full_name
POLICY_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
# Not an RPC service: the health name of the secret backend. NOT_SERVING (and so is the
# overall "") while the backend does not answer; PullService stays SERVING, since tokens
# already cached are still handed out.
SECRETS_HEALTH = "pullbroker.secrets"
# Likewise the metadata database (PostgreSQL; SQLite files are not watched).
STORE_HEALTH = "pullbroker.store"
HEALTH_SERVICES = ("", REGISTRY_SERVICE, PULL_SERVICE, SECRETS_HEALTH, STORE_HEALTH)
"""What grpc.health.v1 reports on ("" is the broker as a whole)."""

_log = get_logger("pullbroker_service.api.server")


@dataclass(frozen=True)
class ServerTls:
    """PEM bytes: the broker's certificate chain and key; the CA bundle clients chain to."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes


@dataclass(frozen=True)
class Services:
    """The use cases the API serves; a service whose use case is None is not offered."""

    registries: RegistriesUseCases
    issuer: TokenIssuing
    logins: LoginIssuing | None = None
    """None: IssueRegistryLogin answers UNIMPLEMENTED."""
    pullable: PullableListing | None = None
    """None: ListPullableRegistries answers UNIMPLEMENTED."""
    deployments: DeploymentUseCases | None = None
    """None: DeploymentService and DeploymentReportingService are not registered."""
    access: AccessChecking | None = None
    """None: PolicyService is not registered."""
    audit: AuditSink | None = None
    """Where PullService calls refused before any use case runs (no certificate name, no
    node role) are recorded, so every failed IssuePullToken is in the audit trail."""
    trail: AuditTrail | None = None
    """The shared audit trail AuditService reads (None: it answers FAILED_PRECONDITION)."""


@dataclass
class BuiltServer:
    """A started server, the addresses it listens on, and its health servicer."""

    server: grpc.aio.Server
    address: str
    health: Any
    insecure_address: str | None = None
    components: dict[str, bool] = field(default_factory=dict)
    """Watched components (health service name -> serving); "" follows all of them."""

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then give in-flight calls `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def set_secrets_serving(self, serving: bool) -> None:
        """Health of the secret backend: "pullbroker.secrets" follows it, and the overall ""
        is SERVING only while every watched component is (ignored once shutting down)."""
        await self.set_component_serving(SECRETS_HEALTH, serving)

    async def set_store_serving(self, serving: bool) -> None:
        """Health of the metadata database ("pullbroker.store"), as set_secrets_serving."""
        await self.set_component_serving(STORE_HEALTH, serving)

    async def set_component_serving(self, component: str, serving: bool) -> None:
        self.components[component] = serving
        await self.health.set(component, _status(serving))
        await self.health.set("", _status(all(self.components.values())))


def _status(serving: bool) -> Any:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


def server_options(limits: ServerLimits) -> list[tuple[str, int]]:
    """Channel arguments for the limits (names from grpc's channel_arg_names.h)."""
    return [
        ("grpc.max_receive_message_length", limits.max_receive_message_bytes),
        ("grpc.max_send_message_length", limits.max_send_message_bytes),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.keepalive_time_ms", limits.keepalive_time_seconds * 1000),
        ("grpc.keepalive_timeout_ms", limits.keepalive_timeout_seconds * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            limits.min_client_ping_interval_seconds * 1000,
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", limits.max_connection_idle_seconds * 1000 or 2**31 - 1),
        ("grpc.max_connection_age_ms", limits.max_connection_age_seconds * 1000 or 2**31 - 1),
        # A stream (WatchDeployment) outlives its connection's age: never cut it.
        ("grpc.max_connection_age_grace_ms", 2**31 - 1),
        # One process per broker: a second one on the same port would split traffic silently.
        ("grpc.so_reuseport", 0),
    ]


async def start_server(
    services: Services,
    *,
    roles_for: RolesFor,
    tls: ServerTls,
    listen: str,
    limits: ServerLimits,
    insecure_dev_port: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> BuiltServer:
    """Build, bind and start the server; the returned address has the real port.

    `interceptors` run around the guarded handlers: tracing's server span, when it is on
    (none otherwise: the guard itself is not an interceptor, see interceptors.py).
    """
    server = grpc.aio.server(options=server_options(limits), interceptors=interceptors or None)
    guard = CallGuard(
        roles_for,
        allow_insecure=insecure_dev_port is not None,
        max_call_seconds=limits.max_call_seconds,
        on_refused=_audit_pull_refusals(services.audit) if services.audit else None,
    )
    guarded: Any = GuardedRegistrar(server, guard)  # quacks like the server for add_*()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(services.registries), guarded
    )
    pull_pb2_grpc.add_PullServiceServicer_to_server(
        PullServicer(services.issuer, services.logins, services.pullable), guarded
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, guarded)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(services.trail), guarded)
    extra = _add_governance(guarded, services.deployments, services.access)
    names = (
        REGISTRY_SERVICE,
        PULL_SERVICE,
        HEALTH_SERVICE,
        AUDIT_SERVICE,
        reflection.SERVICE_NAME,
        *extra,
    )
    # Not enable_server_reflection(): it picks the sync servicer for anything but a real aio server.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names),  # type: ignore[attr-defined] # in __all__, untyped
        guarded,
    )
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=True,
    )
    port = _bind(lambda: server.add_secure_port(listen, credentials), listen, "--listen")
    address = f"{listen.rpartition(':')[0]}:{port}"
    insecure_address = None
    if insecure_dev_port is not None:
        dev = f"127.0.0.1:{insecure_dev_port}"
        insecure_port = _bind(lambda: server.add_insecure_port(dev), dev, "--insecure-dev-port")
        insecure_address = f"127.0.0.1:{insecure_port}"
        _warn_insecure(insecure_address)
    await server.start()
    for service in HEALTH_SERVICES:
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    _log.info("server_started", address=address)
    return BuiltServer(server, address, health, insecure_address)


def _bind(add_port: Callable[[], int], listen: str, flag: str) -> int:
    """`add_port()`, after checking that `listen` can be bound at all: gRPC would print its
    own multi-line error first, then fail with a RuntimeError that does not say which flag."""
    host, _, port_text = listen.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    if port:
        _check_bindable(host.strip("[]") or "0.0.0.0", port, listen, flag)  # noqa: S104
    try:
        return add_port()
    except RuntimeError:
        raise ListenFailed(f"cannot listen on {listen}: check the address ({flag})") from None


def _check_bindable(host: str, port: int, listen: str, flag: str) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ListenFailed(f"cannot listen on {listen}: {host} does not resolve ({flag})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            why = (
                "the address is in use (another broker? `pullbroker health` tells)"
                if exc.errno == errno.EADDRINUSE
                else (exc.strerror or "it cannot be bound").lower()
            )
            raise ListenFailed(
                f"cannot listen on {listen}: {why}; pick another address with {flag}"
            ) from None


def _audit_pull_refusals(audit: AuditSink) -> RefusalHook:
    def refused(service: str, caller: Identity | None, exc: BrokerError) -> None:
        if service == PULL_SERVICE:
            audit.event(Action.TOKEN_ISSUE, outcome_for(exc), caller, reason=str(exc))

    return refused


def _add_governance(
    guarded: Any, deployments: DeploymentUseCases | None, access: AccessChecking | None
) -> tuple[str, ...]:
    """Register DeploymentService, DeploymentReportingService and PolicyService when wired;
    the names added, for reflection."""
    added: list[str] = []
    if deployments is not None:
        deployment_pb2_grpc.add_DeploymentServiceServicer_to_server(
            DeploymentServicer(deployments), guarded
        )
        deployment_pb2_grpc.add_DeploymentReportingServiceServicer_to_server(
            DeploymentReportingServicer(deployments), guarded
        )
        added += [DEPLOYMENT_SERVICE, DEPLOYMENT_REPORTING_SERVICE]
    if access is not None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(access), guarded)
        added.append(POLICY_SERVICE)
    return tuple(added)


def _warn_insecure(address: str) -> None:
    banner = (
        "\n" + "!" * 78 + "\n"
        f"!! INSECURE DEVELOPMENT PORT OPEN on {address}: no TLS, no client certificate.\n"
        "!! Anything on this machine can reach it. Callers there are 'insecure:dev-port',\n"
        "!! denied unless policy.yaml names them. Never use --insecure-dev-port in production.\n"
        + "!"
        * 78
    )
    print(banner, file=sys.stderr, flush=True)
    _log.warning("insecure_port_opened", address=address)
