"""Stand-ins for the broker in unit tests: a settable clock, numbered-token and login issuers."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from pullbroker_client.broker import BrokerCallError, IssuedPullToken, IssuedRegistryLogin
from pullbroker_client.secret import Secret


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class StubIssuer:
    """Stands in for the broker's IssuePullToken: numbered tokens, each call recorded."""

    def __init__(self, clock: FakeClock, *, ttl: float = 300.0, kind: str = "bearer") -> None:
        self.clock = clock
        self.ttl = ttl
        self.kind = kind
        self.calls: list[tuple[str, str | None, bool]] = []

    async def issue_pull_token(
        self, image: str, registry: str = "", force_refresh: bool = False
    ) -> IssuedPullToken:
        self.calls.append((image, registry, force_refresh))
        await asyncio.sleep(0)
        expires = dt.datetime.fromtimestamp(self.clock.now + self.ttl, dt.UTC)
        return IssuedPullToken(
            registry="registries/r1",
            registry_host="127.0.0.1:5000",
            registry_url="https://127.0.0.1:5000",
            auth_kind=self.kind,
            username="robot",
            token=Secret(f"tok-{len(self.calls)}"),
            scope="repository:team/app:pull",
            expires_at=expires,
            repository="team/app",
            registry_ca_pem="",
        )


NO_LOGIN_MESSAGE = (
    "registry 'hub' (127.0.0.1:5000) issues only repository-scoped tokens; runtimes cannot "
    "use them: pull on the node with `pullbroker-sidecar pull IMAGE` and `--dest docker-daemon` "
    "(Docker), `--dest containerd[:NAMESPACE]` (containerd), or `--dest docker-archive:FILE` "
    "then `podman load -i FILE` (podman; skopeo reads the archive)"
)


class StubLoginIssuer:
    """Stands in for the broker's IssueRegistryLogin: numbered secrets, each call recorded.

    `refuse` makes every call fail as the broker does for a registry without logins.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        ttl: float = 300.0,
        username: str = "robot",
        identity_token: bool = False,
        passthrough: bool = False,
        refuse: bool = False,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.username = username
        self.identity_token = identity_token
        self.passthrough = passthrough
        self.refuse = refuse
        self.calls: list[tuple[str, str | None, bool]] = []
        self.pod_tokens: list[str | None] = []
        """The service-account token each call carried (revealed), in call order."""

    async def issue_registry_login(
        self,
        image: str,
        registry: str = "",
        force_refresh: bool = False,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin:
        self.calls.append((image, registry, force_refresh))
        self.pod_tokens.append(service_account_token.reveal() if service_account_token else None)
        await asyncio.sleep(0)
        if self.refuse:
            raise BrokerCallError(grpc.StatusCode.FAILED_PRECONDITION, NO_LOGIN_MESSAGE)
        return IssuedRegistryLogin(
            registry="registries/r1",
            registry_host="127.0.0.1:5000",
            registry_url="https://127.0.0.1:5000",
            username=self.username,
            secret=Secret(f"secret-{len(self.calls)}"),
            identity_token=self.identity_token,
            expires_at=dt.datetime.fromtimestamp(self.clock.now + self.ttl, dt.UTC),
            repository_scoped=False,
            passthrough=self.passthrough,
            registry_ca_pem="",
        )
