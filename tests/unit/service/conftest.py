"""The broker core wired for unit tests: real SQLite store and local secret backend, fake minter.

The minter is the only stand-in (the real one talks to registries and is covered by
tests/integration/test_minting.py); it records what it was asked so tests can check what a
registry would have received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.model import AuthKind, Credential, MintedToken, RegistryRecord
from pullbroker_service.domain.policy import Policy
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore

NODE = "spiffe://pullbroker.local/node/n1"
ADMIN = "spiffe://pullbroker.local/admin"

POLICY = Policy.from_mapping(
    {
        "rules": [
            {"identity": ADMIN, "roles": ["admin"]},
            {
                "identity": "spiffe://pullbroker.local/node/*",
                "roles": ["node"],
                "registries": ["*"],
                "repositories": ["team/*"],
            },
        ]
    }
)


@dataclass
class MintCall:
    registry_id: str
    credential: Credential | None
    repository: str


@dataclass
class FakeMinter:
    """Counts mints and probes; `auth_kind`, `error` and `probe_result` steer its answers."""

    mints: list[MintCall] = field(default_factory=list)
    probes: list[tuple[RegistryRecord, Credential | None, str]] = field(default_factory=list)
    auth_kind: AuthKind = AuthKind.BEARER
    error: Exception | None = None
    probe_result: ProbeResult = field(
        default_factory=lambda: ProbeResult(
            "ok", "registry accepted the credential", 0.01, "bearer"
        )
    )

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        self.mints.append(MintCall(registry.id, credential, repository))
        if self.error is not None:
            raise self.error
        now = datetime.now(UTC)
        return MintedToken(
            self.auth_kind,
            "robot" if self.auth_kind is AuthKind.BASIC else "",
            Secret(f"minted-{len(self.mints)}"),
            pull_scope(repository),
            now,
            now + timedelta(minutes=5),
            repository,
        )

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        self.probes.append((registry, credential, repository))
        return self.probe_result


@dataclass
class Core:
    store: SqliteMetadataStore
    secrets: LocalSecretBackend
    minter: FakeMinter
    cache: TokenCache
    registries: Registries
    issuer: TokenIssuer
    policy: StaticPolicy


def build_core(
    tmp_path: Path,
    *,
    store: SqliteMetadataStore | None = None,
    secrets: LocalSecretBackend | None = None,
) -> Core:
    store = store or SqliteMetadataStore(tmp_path / "metadata.db")
    secrets = secrets or LocalSecretBackend(
        tmp_path / "secrets" / "secrets.db", FileKeyWrapper.open(tmp_path / "secrets" / "kek.key")
    )
    minter = FakeMinter()
    minters = MintersByKind.with_bearer(minter)
    cache = TokenCache()
    policy = StaticPolicy(POLICY)
    return Core(
        store,
        secrets,
        minter,
        cache,
        Registries(store, secrets, minters, cache),
        TokenIssuer(store, secrets, minters, cache, policy),
        policy,
    )


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    built = build_core(tmp_path)
    try:
        yield built
    finally:
        await built.store.close()
        await built.secrets.close()
