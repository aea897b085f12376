"""The broker core (real store, secret backend and minters) for the token-endpoint kinds.

One distribution registry with our token server stands in for Docker Hub, GHCR, Quay, Harbor
and generic registries alike: a record of each kind points at it through an explicit url.
Each kind has two users named by its conventions: one that may pull team/* and one that may
pull nothing there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pullbroker_client.registry.auth import basic_authorization
from pullbroker_client.secret import Secret
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    Credential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.domain.policy import Policy
from pullbroker_service.minting.base import Minter
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.harness.broker_config import LOOPBACK
from tests.harness.canary import new_canary
from tests.harness.images import build_image, push_image
from tests.harness.registry import Registry, TokenAuthRegistry
from tests.integration import node_fetch

ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))
NODE = Identity("spiffe://pullbroker.local/node/n1", frozenset({"node"}))
POLICY = Policy.from_mapping(
    {
        "rules": [
            {"identity": ADMIN.name, "roles": ["admin"]},
            {
                "identity": "spiffe://pullbroker.local/node/*",
                "roles": ["node"],
                "registries": ["*"],
                "repositories": ["**"],
            },
        ]
    }
)
SEEDER = "seeder"


@dataclass(frozen=True)
class KindUsers:
    """A kind's two users, spelled by its conventions."""

    kind: RegistryKind
    puller: str  # may pull team/* (and library/*)
    stranger: str  # may pull only elsewhere/*


KIND_USERS: Mapping[RegistryKind, KindUsers] = {
    k.kind: k
    for k in (
        KindUsers(RegistryKind.DOCKER_HUB, "acmedev", "acmeview"),
        KindUsers(RegistryKind.GHCR, "octo-cat", "octo-dog"),
        KindUsers(RegistryKind.QUAY, "acme+puller", "acme+viewer"),
        KindUsers(RegistryKind.HARBOR, "robot$team+puller", "robot$team+viewer"),
        KindUsers(RegistryKind.GENERIC, "deployer", "stranger"),
    )
}
TOKEN_KINDS = tuple(KIND_USERS)


@dataclass(frozen=True)
class Seeded:
    """The kinds registry and the digests of what was pushed to it."""

    registry: TokenAuthRegistry
    app_digest: str  # team/app:v1
    library_digest: str  # library/hello:v1

    def credential(self, username: str) -> BasicCredential:
        return BasicCredential(username, Secret(self.registry.users[username]))


def seed_kinds_registry(registry: TokenAuthRegistry, layouts: Path) -> Seeded:
    """Add every kind's users and push team/app:v1 and library/hello:v1."""
    registry.add_user(SEEDER, new_canary(SEEDER), {"**": ["*"]})
    for users in KIND_USERS.values():
        grants = {"team/*": ["pull"], "library/*": ["pull"]}
        registry.add_user(users.puller, new_canary("puller"), grants)
        registry.add_user(users.stranger, new_canary("stranger"), {"elsewhere/*": ["pull"]})
    return Seeded(
        registry,
        _push(registry, layouts, "team/app", [1024, 4096]),
        _push(registry, layouts, "library/hello", [512]),
    )


def _push(registry: Registry, layouts: Path, repository: str, sizes: list[int]) -> str:
    image = build_image(layouts, repository.replace("/", "-"), sizes)
    return push_image(
        image, registry, repository, "v1", username=SEEDER, password=registry.users[SEEDER]
    )


@dataclass
class World:
    """Registries and TokenIssuer over a real SQLite store, local secrets and real minters."""

    store: SqliteMetadataStore
    secrets: LocalSecretBackend
    minters: MintersByKind
    registries: Registries
    issuer: TokenIssuer

    async def add(
        self,
        kind: RegistryKind,
        url: str,
        ca_pem: str,
        credential: Credential | None,
        *,
        name: str = "reg",
        test: bool = False,
        allow_basic_passthrough: bool = False,
        repositories: tuple[str, ...] = (),
    ) -> RegistryRecord:
        spec = RegistrySpec(
            name,
            kind,
            url,
            registry_ca_pem=ca_pem,
            allow_basic_passthrough=allow_basic_passthrough,
            repositories=repositories,
        )
        return await self.registries.create(ADMIN, spec, credential, test)

    async def pull_token(self, image: str, registry: str | None = None) -> MintedToken:
        token, _ = await self.issuer.issue(NODE, image, registry, False)
        return token

    async def close(self) -> None:
        await self.minters.aclose()
        await self.store.close()
        await self.secrets.close()


def build_world(
    tmp: Path, monotonic: Callable[[], float] = time.monotonic, *, ecr: Minter | None = None
) -> World:
    """The core; `monotonic` is the minters' clock (back-off windows, challenge cache)."""
    store = SqliteMetadataStore(tmp / "metadata.db")
    secrets = LocalSecretBackend(
        tmp / "secrets" / "secrets.db", FileKeyWrapper.open(tmp / "secrets" / "kek.key")
    )
    minters = MintersByKind.default(
        BearerMinter(timeout=5.0, monotonic=monotonic, dial_policy=LOOPBACK), ecr=ecr
    )
    cache = TokenCache()
    return World(
        store,
        secrets,
        minters,
        Registries(store, secrets, minters, cache),
        TokenIssuer(store, secrets, minters, cache, StaticPolicy(POLICY)),
    )


def authorization_for(token: MintedToken) -> Secret | None:
    """The Authorization a node sends with `token` (the sidecar's IssuedPullToken rule)."""
    if token.auth_kind is AuthKind.BEARER:
        return Secret(f"Bearer {token.token.reveal()}")
    if token.auth_kind is AuthKind.BASIC:
        return basic_authorization(token.username, token.token)
    return None


async def manifest_digest(registry: Registry, token: MintedToken, repository: str) -> str:
    """GET the manifest of repository:v1 with `token`, through the node's fetcher."""
    authorization = authorization_for(token)
    return await node_fetch.manifest_digest(
        registry.url, registry.ca_pem, repository, "v1", authorization
    )
