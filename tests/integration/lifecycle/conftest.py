"""A broker wired with deployments, lifecycle rules, audit and rate limits, in this process.

`LifecycleBroker` wires the adapters the way bootstrap/main.py does (deployment store on
metadata.db, audit sink, rate limiter, deletion rules, guarded token issuer, DeploymentService
and PolicyService), on its own thread and event loop, so blocking clients, async clients and
CLI subprocesses can all call it. The test configuration allows loopback registries (the
harness registry is on 127.0.0.1); a test that wants the product default passes
`dial_policy=DialPolicy()`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pullbroker_client.broker import BrokerClient, BrokerTarget
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles
from pullbroker_service.api import interceptors
from pullbroker_service.api.interceptors import current_caller
from pullbroker_service.api.server import (
    DEPLOYMENT_REPORTING_SERVICE,
    DEPLOYMENT_SERVICE,
    POLICY_SERVICE,
    BuiltServer,
    ServerTls,
    Services,
    start_server,
)
from pullbroker_service.app.access import AccessChecker
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.deployments import Deployments
from pullbroker_service.app.lifecycle import DeletionRules
from pullbroker_service.app.policy_source import PolicySource
from pullbroker_service.app.ratelimit import DEFAULT_LIMITS, Limit, LimitKind, RateLimiter
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.token_guard import GuardedTokenIssuer
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec, ensure_dev_ca
from pullbroker_service.config.broker import ServerLimits
from pullbroker_service.domain.hosts import DialPolicy
from pullbroker_service.domain.identity import ADMIN, NODE, Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import Credential
from pullbroker_service.minting.base import ProbeResult
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore
from pullbroker_service.store.sqlite_deployments import SqliteDeploymentStore

T = TypeVar("T")

TEST_DIAL_POLICY = DialPolicy(allow_loopback=True)
"""The test configuration: the harness registry and token server listen on 127.0.0.1."""

LIFECYCLE_POLICY = """\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
    targets: ["**"]
  - identity: "spiffe://pullbroker.local/admin2"
    roles: [admin]
    targets: ["**"]
  - identity: "spiffe://pullbroker.local/ops/*"
    roles: [admin]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: ["*"]
    repositories: ["**"]
owner_groups:
  - name: platform
    members: ["spiffe://pullbroker.local/ops/*"]
    registries: ["*"]
"""


class CallerAwareRegistries(Registries):
    """Passes the caller to `test` (audit, rate limit), as RegistryServicer is to do."""

    async def test(
        self,
        name: str | None,
        spec: RegistrySpec | None,
        credential: Credential | None,
        repository: str,
        *,
        caller: Identity | None = None,
    ) -> ProbeResult:
        who = caller or current_caller()
        return await super().test(name, spec, credential, repository, caller=who)


class LifecycleBroker:
    """The wired broker on a thread of its own; `stop()` closes everything it opened."""

    def __init__(
        self,
        home: Home,
        *,
        dial_policy: DialPolicy = TEST_DIAL_POLICY,
        limits: Mapping[LimitKind, Limit] = DEFAULT_LIMITS,
    ) -> None:
        self.home = home
        self.audit_path = home.root / "audit" / "audit.jsonl"
        self._dial_policy = dial_policy
        self._limits = limits
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.server: BuiltServer = self.run(self._start())
        except BaseException:
            self._close_loop()
            raise

    @property
    def address(self) -> str:
        return self.server.address

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the broker's loop (where its stores live) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def target(self, role: str = "admin", tls: TlsFiles | None = None) -> BrokerTarget:
        return BrokerTarget(self.address, tls or TlsFiles.from_home(self.home, role))

    def client(self, role: str = "admin", tls: TlsFiles | None = None) -> BrokerClient:
        return BrokerClient(self.target(role, tls), timeout=20.0)

    def issue_cert(self, name: str, uri: str) -> TlsFiles:
        """A client certificate with SPIFFE ID `uri` from the home's dev CA."""
        ca = CertificateAuthority.load(self.home.ca_cert, self.home.ca_key)
        cert_pem, key_pem = ca.issue(LeafSpec(name, uris=(uri,), client=True))
        folder = self.home.root.parent / f"{self.home.root.name}-certs"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.crt").write_bytes(cert_pem)
        key = folder / f"{name}.key"
        key.write_bytes(key_pem)
        key.chmod(0o600)
        return TlsFiles(ca=self.home.ca_cert, cert=folder / f"{name}.crt", key=key)

    def secret_keys(self) -> list[str]:
        """The keys the secret backend holds now."""
        return self.run(self.secrets.list_keys())

    def audit_events(self) -> list[dict[str, str]]:
        """Every audit line, after writing what the sink still holds."""
        self._loop.call_soon_threadsafe(self.audit.flush)
        self.run(asyncio.sleep(0))
        text = self.audit_path.read_text() if self.audit_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self._close_loop()

    async def _start(self) -> BuiltServer:
        home = self.home
        ensure_dev_ca(home)
        policy = PolicySource(home.policy_yaml, check_interval=0.0)
        store = SqliteMetadataStore(home.metadata_db)
        deployment_store = SqliteDeploymentStore(home.metadata_db)
        self.secrets = LocalSecretBackend(home.secrets_db, FileKeyWrapper.open(home.kek_key))
        bearer = BearerMinter(timeout=10.0, dial_policy=self._dial_policy)
        minters = MintersByKind.default(bearer)
        cache = TokenCache()
        self.audit = AuditSink(self.audit_path)
        limiter = RateLimiter(self._limits)
        self._closers = [store.close, deployment_store.close, self.secrets.close, bearer.aclose]
        registries = CallerAwareRegistries(
            store,
            self.secrets,
            minters,
            cache,
            deletion=DeletionRules(policy, deployment_store),
            audit=self.audit,
            limiter=limiter,
        )
        issuer = TokenIssuer(store, self.secrets, minters, cache, policy)
        services = Services(
            registries=registries,
            issuer=GuardedTokenIssuer(issuer, audit=self.audit, limiter=limiter),
            deployments=Deployments(
                deployment_store, registries, policy, audit=self.audit, poll_interval=0.5
            ),
            access=AccessChecker(store, policy),
            audit=self.audit,
        )
        return await start_server(
            services,
            roles_for=lambda name: policy.current().roles_for(name),
            tls=ServerTls(
                certificate_chain=home.cert("server").read_bytes(),
                private_key=home.key("server").read_bytes(),
                client_ca=home.ca_cert.read_bytes(),
            ),
            listen="127.0.0.1:0",
            limits=ServerLimits(),
        )

    async def _stop(self) -> None:
        await self.server.stop(0.5)
        self.audit.close()
        for close in reversed(self._closers):
            await close()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture(autouse=True)
def governance_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The roles of the new services, as api/interceptors.SERVICE_ROLES is to list them."""
    for service, role in (
        (DEPLOYMENT_SERVICE, ADMIN),
        (DEPLOYMENT_REPORTING_SERVICE, NODE),
        (POLICY_SERVICE, ADMIN),
    ):
        monkeypatch.setitem(interceptors.SERVICE_ROLES, service, role)


@pytest.fixture
def make_lifecycle_broker(tmp_path: Path) -> Iterator[Callable[..., LifecycleBroker]]:
    """Factory: a wired broker in a fresh home with `policy` (LIFECYCLE_POLICY by default)."""
    started: list[LifecycleBroker] = []

    def make(policy: str = LIFECYCLE_POLICY, **options: Any) -> LifecycleBroker:
        home = Home(tmp_path / f"lifecycle-home-{len(started)}")
        home.root.mkdir(mode=0o700)
        home.policy_yaml.write_text(policy)
        broker = LifecycleBroker(home, **options)
        started.append(broker)
        home.broker_json.write_text(json.dumps({"address": broker.address}) + "\n")
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def lifecycle_broker(make_lifecycle_broker: Callable[..., LifecycleBroker]) -> LifecycleBroker:
    return make_lifecycle_broker()
