"""The pieces around per-kind minting: quota headers and back-off, token claims, kind
conventions and advice, the kind -> minter table, and how the issuer uses them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pullbroker_client.registry import errors as client
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.secret import Secret
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.errors import (
    CredentialRejected,
    ImageNotFound,
    InvalidRegistry,
    RateLimited,
    UpstreamProtocolError,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    BasicCredential,
    Credential,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.domain.policy import Policy
from pullbroker_service.minting.bearer import BearerMinter, KindMinter, check_realm
from pullbroker_service.minting.by_kind import (
    BEARER_KINDS,
    CLOUD_KINDS,
    MintersByKind,
)
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.minting.token_claims import grants_pull
from pullbroker_service.minting.token_kinds import DOCKER_HUB, GHCR
from pullbroker_service.minting.upstream import classify_pull_failure, domain_error
from pullbroker_service.minting.upstream_backoff import Quota, UpstreamBackoff, parse_quota
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore
from structlog.testing import capture_logs

from tests.unit.service.conftest import FakeMinter

KEY = ("registry-1.docker.io", "acmedev")


def stored_record(kind: RegistryKind = RegistryKind.GENERIC) -> RegistryRecord:
    """A saved record of `kind` (what a minter is handed)."""
    now = datetime.now(UTC)
    return RegistryRecord(
        "r1", "hub", kind, "https://reg.example", "reg.example", "acmedev", "", "", False, 1,
        None, "test", now, now, "e",
    )  # fmt: skip


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class TestQuotaHeaders:
    """Docker Hub's `ratelimit-*` headers parse into a Quota; anything else is None."""

    @pytest.mark.parametrize(
        ("headers", "want"),
        [
            (
                {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"},
                Quota(100, 76, 21600),
            ),
            ({"ratelimit-limit": "200", "ratelimit-remaining": "0"}, Quota(200, 0, None)),
            ({"ratelimit-remaining": " 0 ; w = 60 "}, Quota(None, 0, 60)),
            ({"ratelimit-limit": "100;w=21600;comment=x"}, Quota(100, None, 21600)),
        ],
    )
    def test_parses(self, headers: dict[str, str], want: Quota) -> None:
        """Value, optional window and trailing parameters are read."""
        assert parse_quota(headers) == want

    @pytest.mark.parametrize(
        "headers", [{}, {"ratelimit-limit": "lots"}, {"ratelimit-remaining": "-1;w=5"}]
    )
    def test_absent_or_bad(self, headers: dict[str, str]) -> None:
        """No headers, or values that are not counts, are no quota."""
        assert parse_quota(headers) is None

    def test_describe(self) -> None:
        """The probe message spells the quota out."""
        assert Quota(100, 0, 21600).describe() == "0 of 100 pulls left per 21600 s"


class TestBackoff:
    """Back-off per (host, account): 429s and empty quotas hold calls for their window."""

    def test_retry_after_then_expiry(self) -> None:
        """check fails with the seconds left until the window is over, then passes."""
        clock = Clock()
        backoff = UpstreamBackoff(monotonic=clock)
        assert backoff.rate_limited(KEY, 10.0) == 10
        clock.now += 4
        with pytest.raises(RateLimited) as info:
            backoff.check(KEY, "'hub'")
        assert info.value.retry_after == 6
        assert "registry-1.docker.io answered 429" in str(info.value)
        clock.now += 6
        backoff.check(KEY, "'hub'")
        assert backoff.remaining(KEY) == 0

    def test_default_and_cap(self) -> None:
        """No Retry-After uses the default; an absurd one is capped."""
        backoff = UpstreamBackoff(monotonic=Clock(), default_delay=15, max_delay=100)
        assert backoff.rate_limited(KEY, None) == 15
        assert backoff.rate_limited(("other", ""), 10**9) == 100

    def test_accounts_are_separate(self) -> None:
        """One account backing off does not hold another on the same host."""
        backoff = UpstreamBackoff(monotonic=Clock())
        backoff.rate_limited(KEY, 30)
        backoff.check(("registry-1.docker.io", "someoneelse"), "'other'")
        with pytest.raises(RateLimited):
            backoff.check(KEY, "'hub'")

    def test_shorter_hold_does_not_shorten(self) -> None:
        """A later, shorter Retry-After does not cut a longer back-off short."""
        backoff = UpstreamBackoff(monotonic=Clock())
        backoff.rate_limited(KEY, 60)
        backoff.rate_limited(KEY, 5)
        assert backoff.remaining(KEY) == 60

    def test_empty_quota_holds_for_the_window(self) -> None:
        """remaining 0 holds for the window and logs the quota; remaining > 0 does not."""
        backoff = UpstreamBackoff(monotonic=Clock())
        with capture_logs() as logs:
            backoff.observe(KEY, {"ratelimit-limit": "100;w=600", "ratelimit-remaining": "3;w=600"})
            backoff.check(KEY, "'hub'")
            backoff.observe(KEY, {"ratelimit-limit": "100;w=600", "ratelimit-remaining": "0;w=600"})
        assert [e["remaining"] for e in logs if e["event"] == "registry_rate_limit_seen"] == [3, 0]
        with pytest.raises(RateLimited, match="pull quota used up") as info:
            backoff.check(KEY, "'hub'")
        assert info.value.retry_after == 600


def jwt(claims: object) -> str:
    """An unsigned JWT-shaped token carrying `claims`."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'ES256'})}.{part(claims)}.c2ln"


class TestTokenClaims:
    """A JWT's access claim can say "no pull"; it is never trusted to say more."""

    def test_granted(self) -> None:
        """pull (or *) on the repository is a grant."""
        for actions in (["pull"], ["pull", "push"], ["*"]):
            access = [{"type": "repository", "name": "team/app", "actions": actions}]
            assert grants_pull(jwt({"access": access}), "team/app") is True

    @pytest.mark.parametrize(
        "access",
        [
            [],
            [{"type": "repository", "name": "team/app", "actions": []}],
            [{"type": "repository", "name": "team/other", "actions": ["pull"]}],
            [{"type": "repository", "name": "team/app", "actions": ["push"]}],
            [{"type": "registry", "name": "catalog", "actions": ["*"]}],
        ],
    )
    def test_not_granted(self, access: list[object]) -> None:
        """Nothing, another repository, or another action is no grant."""
        assert grants_pull(jwt({"access": access}), "team/app") is False

    @pytest.mark.parametrize(
        "token",
        [
            "opaque-ghcr-token",
            jwt({"sub": "x"}),
            jwt({"access": "everything"}),
            jwt({"access": ["team/app"]}),
            jwt({"access": [{"type": "repository", "name": "team/app", "actions": "pull"}]}),
            jwt([1, 2]),
            "a.%%%.c",
        ],
    )
    def test_cannot_tell(self, token: str) -> None:
        """Opaque tokens and unexpected claim shapes are "cannot tell", never "denied"."""
        assert grants_pull(token, "team/app") is None


class TestKindAdvice:
    """Kinds spell repositories their way and add their advice to failures."""

    def test_docker_hub_single_names(self) -> None:
        """Docker Hub's one-component names live under library/; others are kept."""
        assert DOCKER_HUB.repository("nginx") == "library/nginx"
        assert DOCKER_HUB.repository("acme/app") == "acme/app"
        assert DOCKER_HUB.repository("") == ""
        assert GHCR.repository("app") == "app"

    def test_not_found_after_authentication(self) -> None:
        """A missing image says authentication worked and what to check, with the kind's hint."""
        record = stored_record(RegistryKind.DOCKER_HUB)
        exc = client.ManifestUnknown("registry answered 404 for manifest library/ngnix:1")
        outcome, error = classify_pull_failure(exc, record, "library/ngnix", hints=DOCKER_HUB.hints)
        assert outcome == "not_found"
        assert isinstance(error, ImageNotFound)
        assert "image not found after successful authentication" in str(error)
        assert "official images are library/NAME" in str(error)

    def test_authentication_required_is_not_not_found(self) -> None:
        """401 at the registry with a token is "requires authentication", credential_rejected."""
        record = stored_record(RegistryKind.GHCR)
        exc = client.AuthenticationRequired("registry answered 401")
        outcome, error = classify_pull_failure(exc, record, "acme/app", hints=GHCR.hints)
        assert outcome == "credential_rejected"
        assert isinstance(error, CredentialRejected)
        assert "requires authentication" in str(error)
        assert "read:packages" in str(error)

    def test_default_advice_unchanged(self) -> None:
        """Without a kind, the generic advice is given."""
        error = domain_error(
            client.CredentialRejected("x"), stored_record(), "team/app", anonymous=False
        )
        assert str(error).endswith("check the username and password/token")


@dataclass
class Closable(FakeMinter):
    """A minter that counts its closes."""

    closed: int = 0

    async def aclose(self) -> None:
        self.closed += 1


class TestMinterTable:
    """default() serves every token-endpoint kind, and the cloud kinds given to it."""

    async def test_default_kinds(self) -> None:
        """Each token kind gets a view of the one bearer minter with its conventions."""
        bearer = BearerMinter()
        table = MintersByKind.default(bearer)
        assert table.kinds() == BEARER_KINDS
        minter = table.for_kind(RegistryKind.DOCKER_HUB)
        assert isinstance(minter, KindMinter)
        assert (minter.bearer, minter.kind) == (bearer, DOCKER_HUB)
        with pytest.raises(InvalidRegistry, match="kind ecr is not supported"):
            table.for_kind(RegistryKind.ECR)
        await table.aclose()

    async def test_cloud_minters_and_closing(self) -> None:
        """google serves gcr and gar; aclose closes each distinct minter once."""
        ecr, google, azure = Closable(), Closable(), Closable()
        table = MintersByKind.default(BearerMinter(), ecr=ecr, google=google, azure=azure)
        assert table.kinds() == BEARER_KINDS | CLOUD_KINDS
        assert table.for_kind(RegistryKind.GAR) is table.for_kind(RegistryKind.GCR) is google
        await table.aclose()
        assert (ecr.closed, google.closed, azure.closed) == (1, 1, 1)


NODE = Identity("spiffe://pullbroker.local/node/n1", frozenset({"node"}))
ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))
OPEN_POLICY = Policy.from_mapping(
    {
        "rules": [
            {"identity": NODE.name, "roles": ["node"], "registries": ["*"], "repositories": ["**"]}
        ]
    }
)


@dataclass
class Issuing:
    """The issuer and registries over one fake minter."""

    minter: FakeMinter
    registries: Registries
    issuer: TokenIssuer


@pytest.fixture
async def issuing(tmp_path: Path) -> AsyncIterator[Issuing]:
    """The issuer over real stores, with a fake minter behind every kind."""
    store = SqliteMetadataStore(tmp_path / "m.db")
    secrets = LocalSecretBackend(tmp_path / "s.db", FileKeyWrapper.open(tmp_path / "kek.key"))
    minter = FakeMinter()
    minters = MintersByKind(dict.fromkeys(BEARER_KINDS | CLOUD_KINDS, minter))
    cache = TokenCache()
    try:
        yield Issuing(
            minter,
            Registries(store, secrets, minters, cache),
            TokenIssuer(store, secrets, minters, cache, StaticPolicy(OPEN_POLICY)),
        )
    finally:
        await store.close()
        await secrets.close()


async def add(issuing: Issuing, kind: RegistryKind, url: str, credential: Credential) -> None:
    """Create registry "r" of `kind` without testing it."""
    await issuing.registries.create(ADMIN, RegistrySpec("r", kind, url), credential, False)


class TestIssuerWithKinds:
    """The issuer matches Docker Hub references and audits only real pass-through."""

    @pytest.mark.parametrize(
        "image", ["nginx", "docker.io/library/nginx:1.27", "index.docker.io/library/nginx"]
    )
    async def test_docker_io_refs_find_the_docker_hub_record(
        self, issuing: Issuing, image: str
    ) -> None:
        """A docker_hub record (registry-1.docker.io) serves docker.io references."""
        await add(issuing, RegistryKind.DOCKER_HUB, "", BasicCredential("acmedev", Secret("t")))
        token, record = await issuing.issuer.issue(NODE, image, None, False)
        assert record.host == "registry-1.docker.io"
        assert token.repository == "library/nginx"

    async def test_ecr_basic_is_not_passthrough(self, issuing: Issuing) -> None:
        """An ECR BASIC token is minted, short-lived: no basic_passthrough_used audit."""
        url = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        await add(
            issuing, RegistryKind.ECR, url, AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("s"))
        )
        issuing.minter.auth_kind = AuthKind.BASIC
        with capture_logs() as logs:
            await issuing.issuer.issue(NODE, url.removeprefix("https://") + "/app:1", None, False)
        events = [e["event"] for e in logs]
        assert "token_issued" in events
        assert "basic_passthrough_used" not in events


class TestRealmPinning:
    """Well-known registries' token realms are pinned; others may name any dialable host."""

    @pytest.mark.parametrize(
        ("host", "realm"),
        [
            ("registry-1.docker.io", "https://auth.docker.io/token"),
            ("ghcr.io", "https://ghcr.io/token"),
            ("quay.io", "https://quay.io/v2/auth"),
            ("harbor.corp.example", "https://sso.corp.example/service/token"),
        ],
    )
    def test_accepted(self, host: str, realm: str) -> None:
        """The registry's own token service (or any, for self-hosted hosts) is accepted."""
        check_realm(Challenge("bearer", {"realm": realm}), replace(stored_record(), host=host))

    @pytest.mark.parametrize(
        ("host", "realm", "fragment"),
        [
            ("ghcr.io", "https://evil.example/token", "its token service is ghcr.io"),
            ("registry-1.docker.io", "https://ghcr.io/token", "auth.docker.io"),
            ("harbor.corp.example", "https://169.254.169.254/token", "must not dial"),
        ],
    )
    def test_refused(self, host: str, realm: str, fragment: str) -> None:
        """Another realm host, or a link-local one, is refused before any credential is sent."""
        record = replace(stored_record(), host=host)
        with pytest.raises(UpstreamProtocolError, match=fragment):
            check_realm(Challenge("bearer", {"realm": realm}), record)
