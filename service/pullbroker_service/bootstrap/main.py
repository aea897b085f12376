"""The only place adapters are wired: home -> dev CA -> stores -> minters -> app -> api -> server.

`start_broker` returns a running broker (tests run it in-process); `serve` is what
`pullbroker serve` runs: start, write <home>/broker.json, wait for SIGTERM/SIGINT, drain.
Beside the server, a running broker keeps two background tasks: a check of the secret backend
(health "pullbroker.secrets") and the reconciler. A broker holds the home folder's lock
shared, and does not start over an unfinished `pullbroker secrets migrate`
(bootstrap/migration.py). With `metrics_listen` set, a plain-HTTP Prometheus listener serves
the broker's metrics (infra/metrics.py) on a thread of its own. With `tracing` set, spans go
to an OTLP collector (bootstrap/tracing.py).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from contextlib import suppress
from dataclasses import dataclass, field

from pullbroker_client import tracing
from pullbroker_client.metrics_http import MetricsServer, serve_metrics

from pullbroker_service.api.server import BuiltServer, ServerTls, Services, start_server
from pullbroker_service.app.access import AccessChecker
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.audit_forward import TrailForwarder
from pullbroker_service.app.deployments import Deployments
from pullbroker_service.app.lifecycle import DeletionRules
from pullbroker_service.app.pod_identity import PodIdentityVerifier
from pullbroker_service.app.policy_memo import PolicyMemo
from pullbroker_service.app.policy_source import PolicySource
from pullbroker_service.app.pullable import PullableRegistries
from pullbroker_service.app.ratelimit import Limit, LimitKind, RateLimiter
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.registry_logins import LoginIssuer
from pullbroker_service.app.token_guard import GuardedLoginIssuer, GuardedTokenIssuer
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.bootstrap.backend_watch import first_check, start_background
from pullbroker_service.bootstrap.broker_home import (
    HomeLock,
    prepare_home,
    remove_broker_json,
    write_broker_json,
)
from pullbroker_service.bootstrap.closers import Closer, close_all
from pullbroker_service.bootstrap.devca import ensure_dev_ca
from pullbroker_service.bootstrap.migration import check_secret_references
from pullbroker_service.bootstrap.stores import Stores, open_stores
from pullbroker_service.bootstrap.tracing import start_tracing
from pullbroker_service.config.broker import BrokerConfig, ConfigError
from pullbroker_service.domain.hosts import DialPolicy
from pullbroker_service.domain.kinds import KindSettings
from pullbroker_service.infra.logging import configure_logging, get_logger
from pullbroker_service.infra.metrics import BrokerMetrics
from pullbroker_service.minting.azure import AzureMinter
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.minting.ecr import EcrConfig, EcrMinter
from pullbroker_service.minting.google import GoogleConfig, GoogleMinter
from pullbroker_service.minting.upstream_backoff import UpstreamBackoff
from pullbroker_service.secrets.factory import GuardedBackend, build_secret_backend

_log = get_logger("pullbroker_service.bootstrap.main")


@dataclass
class Broker:
    """A running broker and what must be closed when it stops."""

    config: BrokerConfig
    server: BuiltServer
    closers: list[Closer] = field(default_factory=list)
    secrets: GuardedBackend | None = None
    """The secret backend in use (tests reach the reconciler and the backend through it)."""
    reconciler: Reconciler | None = None
    metrics: BrokerMetrics | None = None
    """The broker's metrics, when `metrics_listen` is set."""
    metrics_server: MetricsServer | None = None

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def metrics_url(self) -> str | None:
        """http://HOST:PORT/metrics of the metrics listener, if one is open."""
        return self.metrics_server.url if self.metrics_server is not None else None

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish, close stores and minters."""
        wait = self.config.shutdown_grace_seconds if grace is None else grace
        await self.server.stop(wait)
        for close in reversed(self.closers):
            with suppress(Exception):  # one failing close must not keep the others open
                await close()
        remove_broker_json(self.config.home, self.address)
        _log.info("broker_stopped", address=self.address)


async def start_broker(config: BrokerConfig) -> Broker:
    """Build every adapter from `config`, start the server, write broker.json.

    A secret backend that is down at start is not fatal (the broker serves, reporting
    NOT_SERVING, and recovers when it answers); a backend that refuses the broker's
    configuration (credentials, TLS, permissions) is.
    """
    home = config.home
    prepare_home(home)
    configure_logging(log_file=home.broker_log, level=config.log_level, stderr=config.log_to_stderr)
    made = ensure_dev_ca(home, config.node_hostname) if config.tls is None else []
    if made:
        _log.info("dev_ca_created", files=[str(p.relative_to(home.root)) for p in made])
    lock = HomeLock.acquire(home, exclusive=False)
    closers: list[Closer] = [lock.release]
    metrics = BrokerMetrics() if config.metrics_listen is not None else None
    metrics_server: MetricsServer | None = None
    try:
        if (stop_tracing := start_tracing(config)) is not None:
            closers.append(stop_tracing)
        policy = PolicyMemo(PolicySource(config.policy_file))
        stores = await open_stores(config)
        closers.append(stores.close)
        store = stores.metadata
        secrets = build_secret_backend(config.secrets, home, envelopes=stores.envelopes)
        closers.append(secrets.close)
        minters = build_minters(config, metrics)
        closers.append(minters.aclose)
        await check_secret_references(home, store, secrets.name)
        if metrics is not None:
            secrets.metrics = metrics.backend(secrets.name)
        available = await first_check(secrets)
        if secrets.metrics is not None:
            secrets.metrics.set_up(available)
        services = _build_services(config, stores, secrets, minters, policy, closers, metrics)
        tls = server_tls(config)
        if metrics is not None and config.metrics_listen is not None:
            # Before the gRPC server: a taken metrics port then leaves nothing serving.
            metrics.watch_certificates(tls.certificate_chain, tls.client_ca)
            metrics_server = serve_metrics(config.metrics_listen, metrics.registry)
            closers.append(_stopper(metrics_server))
            _log.info("metrics_listening", address=metrics_server.address)
        server = await start_server(
            services,
            roles_for=policy.roles_for,
            tls=tls,
            listen=config.listen,
            limits=config.limits,
            insecure_dev_port=config.insecure_dev_port,
            interceptors=tracing.server_interceptors(),
        )
    except BaseException:
        await close_all(closers)
        raise
    reconciler = Reconciler(
        store, secrets, grace_seconds=config.reconcile_grace_seconds, lock=stores.jobs
    )
    closers += start_background(config, server, secrets, reconciler, available, stores.database)
    broker = Broker(config, server, closers, secrets, reconciler, metrics, metrics_server)
    write_broker_json(home, server.address)
    _log.info("broker_started", address=server.address, home=str(home.root))
    return broker


def _build_services(
    config: BrokerConfig,
    stores: Stores,
    secrets: GuardedBackend,
    minters: MintersByKind,
    policy: PolicyMemo,
    closers: list[Closer],
    metrics: BrokerMetrics | None = None,
) -> Services:
    """The use cases the API serves, sharing one token cache, audit sink, rate limiter and
    metrics."""
    home = config.home
    store, deployment_store = stores.metadata, stores.deployments
    forward = TrailForwarder(stores.audit_trail) if stores.audit_trail is not None else None
    audit = AuditSink(
        home.audit_log,
        max_file_bytes=config.audit.max_file_bytes,
        keep_files=config.audit.keep_files,
        forward=forward,
    )
    closers.append(audit.aclose)
    limiter = RateLimiter(rate_limits(config), metrics=metrics)
    cache = TokenCache(
        max_entries=config.token_cache.max_entries,
        max_bytes=config.token_cache.max_bytes,
        mint_deadline=config.token_cache.mint_deadline_seconds,
        metrics=metrics,
    )
    registries = Registries(
        store,
        secrets,
        minters,
        cache,
        kind_settings=KindSettings(google_oauth_hosts=GoogleConfig().allowed_oauth_hosts),
        deletion=DeletionRules(policy, deployment_store),
        audit=audit,
        limiter=limiter,
    )
    pods = build_pod_verifier(config)
    issuer = TokenIssuer(store, secrets, minters, cache, policy, pods=pods)
    return Services(
        registries=registries,
        issuer=GuardedTokenIssuer(issuer, audit=audit, limiter=limiter, metrics=metrics),
        # The same cache as the tokens': a rotation or deletion drops logins too.
        logins=GuardedLoginIssuer(
            LoginIssuer(store, secrets, minters, cache, policy, pods=pods),
            audit=audit,
            limiter=limiter,
            metrics=metrics,
        ),
        deployments=Deployments(
            deployment_store, registries, policy, audit=audit, changes=stores.changes
        ),
        access=AccessChecker(store, policy),
        audit=audit,
        trail=stores.audit_trail,
        pullable=PullableRegistries(store, policy),
    )


def rate_limits(config: BrokerConfig) -> dict[LimitKind, Limit]:
    limits = config.rate_limits
    return {
        LimitKind.ISSUE_PULL_TOKEN: Limit(
            limits.issue_pull_token_per_second, limits.issue_pull_token_burst
        ),
        LimitKind.TEST_CONNECTION: Limit(
            limits.test_connection_per_second, limits.test_connection_burst
        ),
    }


def build_pod_verifier(config: BrokerConfig) -> PodIdentityVerifier | None:
    """The service-account token verifier, when the broker is configured for a cluster;
    an unreadable key file stops the start (PodKeysUnavailable)."""
    k8s = config.kubernetes
    if k8s is None or k8s.jwks_file is None:
        return None
    return PodIdentityVerifier(
        issuer=k8s.issuer,
        audience=k8s.audience,
        jwks_file=k8s.jwks_file,
        leeway_seconds=k8s.leeway_seconds,
    )


def build_minters(config: BrokerConfig, metrics: BrokerMetrics | None = None) -> MintersByKind:
    """Every registry kind: token-endpoint kinds on one BearerMinter, and the cloud minters."""
    ecr = EcrConfig(endpoint_url=config.ecr_endpoint_url, sts_endpoint_url=config.sts_endpoint_url)
    dial = DialPolicy(
        allow_loopback=config.allow_loopback_registries,
        allow_private=config.allow_private_registries,
    )
    backoff = UpstreamBackoff()
    if metrics is not None:
        metrics.watch_backoffs(backoff.in_force)
    return MintersByKind.default(
        BearerMinter(dial_policy=dial, backoff=backoff),
        ecr=EcrMinter(ecr),
        google=GoogleMinter(dial_policy=dial),
        azure=AzureMinter(dial_policy=dial),
    )


def server_tls(config: BrokerConfig) -> ServerTls:
    """The configured TLS files, else the development CA's in <home>/tls."""
    home, tls = config.home, config.tls
    files = (
        (tls.cert_file, tls.key_file, tls.ca_file)
        if tls is not None
        else (home.cert("server"), home.key("server"), home.ca_cert)
    )
    try:
        chain, key, ca = (path.read_bytes() for path in files)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the broker's TLS file {exc.filename} ({exc.strerror}): check the "
            "tls section of the config file"
        ) from None
    return ServerTls(certificate_chain=chain, private_key=key, client_ca=ca)


async def serve(config: BrokerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls and exit."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: broker.json appears during start_broker, and a supervisor may signal
    # as soon as it sees it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        broker = await start_broker(config)
        try:
            # Everything built so far lives as long as the process: keep the collector from
            # rescanning it on every full collection of the request path's short-lived objects.
            gc.collect()
            gc.freeze()
            await stopping.wait()
            _log.info("shutdown_requested", grace_seconds=config.shutdown_grace_seconds)
        finally:
            await broker.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _stopper(server: MetricsServer) -> Closer:
    async def stop() -> None:
        await asyncio.to_thread(server.stop)

    return stop
