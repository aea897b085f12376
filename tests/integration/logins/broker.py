"""A broker wired with IssueRegistryLogin and every cloud minter, in this process.

`LoginBroker` wires the adapters as bootstrap/main.py does for logins (a LoginIssuer beside
the TokenIssuer, sharing one TokenCache, both behind the audit/rate-limit guards), with the
cloud minters pointed at the local stand-ins: moto for ECR and STS, the Google and Azure
fixtures (tests/integration/cloud). It runs on its own thread and event loop, writes
broker.json and has the dev CA's node certificate, so `pullbroker-sidecar` processes (the
daemon, pull-secret) reach it as they would a real broker.

The fixture registries listen on 127.0.0.1, which the cloud kinds' validation refuses, so
`seed` writes records to the store and the secret backend directly, as the minter tests'
records.py does; everything after the record (policy, cache, minting, API) is the product's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pullbroker_client.broker import BrokerClient, BrokerTarget
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles
from pullbroker_service.api.server import BuiltServer, ServerTls, Services, start_server
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.policy_source import PolicySource
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.registry_logins import LoginIssuer
from pullbroker_service.app.token_guard import GuardedLoginIssuer, GuardedTokenIssuer
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.bootstrap.devca import ensure_dev_ca
from pullbroker_service.config.broker import ServerLimits
from pullbroker_service.domain.model import (
    Credential,
    RecordState,
    RegistryKind,
    RegistryRecord,
    credential_to_bytes,
    credential_username,
)
from pullbroker_service.minting.azure import AzureConfig, AzureMinter
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.minting.ecr import EcrConfig, EcrMinter
from pullbroker_service.minting.google import GoogleConfig, GoogleMinter
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.harness.broker_config import LOOPBACK
from tests.integration.cloud.aws_world import AwsWorld
from tests.integration.cloud.fixtures_azure import AzureWorld
from tests.integration.cloud.fixtures_google import GoogleWorld

T = TypeVar("T")

ALLOWED = "team/app"
POLICY = f"""\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: ["*"]
    repositories: ["{ALLOWED}"]
"""


def cloud_minters(aws: AwsWorld, google: GoogleWorld, azure: AzureWorld) -> MintersByKind:
    """Every kind, the cloud minters pointed at moto and the fixtures (trusting their CA)."""
    ca_pem = google.registry.ca_pem
    return MintersByKind.default(
        BearerMinter(timeout=10.0, dial_policy=LOOPBACK),
        ecr=EcrMinter(EcrConfig(endpoint_url=aws.url, sts_endpoint_url=aws.url)),
        google=GoogleMinter(
            GoogleConfig(allowed_oauth_hosts=frozenset({google.oauth.host}), oauth_ca_pem=ca_pem),
            dial_policy=LOOPBACK,
        ),
        azure=AzureMinter(
            AzureConfig(
                authority=azure.aad.url,
                allowed_authority_hosts=frozenset({azure.aad.host}),
                authority_ca_pem=azure.registry.ca_pem,
            ),
            dial_policy=LOOPBACK,
        ),
    )


class LoginBroker:
    """The wired broker on a thread of its own; `stop()` closes everything it opened."""

    def __init__(self, home: Home, minters: MintersByKind) -> None:
        self.home = home
        self.audit_path = home.root / "audit" / "audit.jsonl"
        self._minters = minters
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.server: BuiltServer = self.run(self._start())
        except BaseException:
            self._close_loop()
            raise
        home.broker_json.write_text(json.dumps({"address": self.server.address}) + "\n")

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the broker's loop (where its stores live) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def client(self, role: str = "node") -> BrokerClient:
        target = BrokerTarget(self.server.address, TlsFiles.from_home(self.home, role))
        return BrokerClient(target, timeout=20.0)

    def seed(
        self,
        name: str,
        kind: RegistryKind,
        url: str,
        credential: Credential,
        *,
        ca_pem: str = "",
        passthrough: bool = False,
    ) -> RegistryRecord:
        """A READY record for `url` holding `credential` (see the module docstring)."""
        return self.run(self._seed(name, kind, url, credential, ca_pem, passthrough))

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

    async def _seed(
        self,
        name: str,
        kind: RegistryKind,
        url: str,
        credential: Credential,
        ca_pem: str,
        passthrough: bool,
    ) -> RegistryRecord:
        record_id = f"{name}-id"
        ref = await self.secrets.put(record_id, credential_to_bytes(credential))
        now = datetime.now(UTC)
        record = RegistryRecord(
            id=record_id, display_name=name, kind=kind, url=url,
            host=urlsplit(url).netloc, username=credential_username(credential),
            registry_ca_pem=ca_pem, region="", allow_basic_passthrough=passthrough,
            credential_version=1, secret_ref=ref, creator="test", create_time=now,
            update_time=now, etag="1", state=RecordState.READY,
        )  # fmt: skip
        await self.store.create(record)
        return record

    async def _start(self) -> BuiltServer:
        home = self.home
        ensure_dev_ca(home)
        policy = PolicySource(home.policy_yaml, check_interval=0.0)
        self.store = SqliteMetadataStore(home.metadata_db)
        self.secrets = LocalSecretBackend(home.secrets_db, FileKeyWrapper.open(home.kek_key))
        self.audit = AuditSink(self.audit_path)
        cache = TokenCache()
        minters = self._minters
        logins = GuardedLoginIssuer(
            LoginIssuer(self.store, self.secrets, minters, cache, policy), audit=self.audit
        )
        services = Services(
            logins=logins,
            registries=Registries(self.store, self.secrets, minters, cache),
            issuer=GuardedTokenIssuer(
                TokenIssuer(self.store, self.secrets, minters, cache, policy), audit=self.audit
            ),
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
        await self.store.close()
        await self.secrets.close()
        await self._minters.aclose()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
