"""ping and fetch_token against a real local HTTPS registry front and token endpoint."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pullbroker_client.registry.auth import BearerToken, basic_authorization, fetch_token, ping
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.registry.errors import (
    CredentialRejected,
    RateLimited,
    RegistryError,
    RegistryProtocolError,
    UnsupportedAuth,
)
from pullbroker_client.registry.transport import Transport
from pullbroker_client.secret import Secret

from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request
from tests.unit.client.registry.conftest import Serve

USER = "alice"
PASSWORD = "pw-canary-3b8f1d"
TOKEN = "tok-canary-91ac5e"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _json(document: object, status: int = 200) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(document).encode())


def _token_endpoint(request: Request) -> Reply:
    if request.headers.get("authorization") != BASIC:
        return _json({"details": f"bad credentials {PASSWORD}"}, status=401)
    issued = {"token": TOKEN, "expires_in": 300, "issued_at": "2026-01-01T00:00:00.123456789Z"}
    return _json(issued)


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.path).query)


def _bearer(realm: str, **params: str) -> Challenge:
    return Challenge("bearer", {"realm": realm, **params})


@pytest.fixture
async def transport(test_ca: TestCA) -> AsyncIterator[Transport]:
    """A transport trusting the test CA."""
    async with Transport(ca_pem=test_ca.pem) as transport:
        yield transport


class TestPing:
    """GET /v2/ tells whether and how the registry wants authentication."""

    async def test_open_registry(self, serve: Serve, transport: Transport) -> None:
        """200 means anonymous access: no challenges."""
        server = serve(lambda r: _json({}))
        assert await ping(transport, server.url() + "/") == []
        assert server.requests[0].path == "/v2/"

    async def test_challenges_from_every_header(self, serve: Serve, transport: Transport) -> None:
        """Challenges are collected from all WWW-Authenticate headers, in order."""
        headers = [
            ("WWW-Authenticate", 'Basic realm="r"'),
            ("WWW-Authenticate", 'Bearer realm="https://a/t",service="reg"'),
        ]
        server = serve(lambda r: Reply(401, headers, b"{}"))
        assert await ping(transport, server.url()) == [
            Challenge("basic", {"realm": "r"}),
            _bearer("https://a/t", service="reg"),
        ]

    async def test_401_without_challenge(self, serve: Serve, transport: Transport) -> None:
        """A 401 with no challenge cannot be answered: UnsupportedAuth."""
        server = serve(lambda r: Reply(401))
        with pytest.raises(UnsupportedAuth, match="without a WWW-Authenticate"):
            await ping(transport, server.url())

    async def test_not_a_registry(self, serve: Serve, transport: Transport) -> None:
        """404 on /v2/ says the URL is not a v2 registry."""
        server = serve(lambda r: Reply(404))
        with pytest.raises(RegistryProtocolError, match="no /v2/ endpoint"):
            await ping(transport, server.url())

    async def test_unavailable(self, serve: Serve, transport: Transport) -> None:
        """503 is a temporary protocol error."""
        server = serve(lambda r: Reply(503, body=b"busy"))
        with pytest.raises(RegistryProtocolError) as caught:
            await ping(transport, server.url())
        assert caught.value.temporary


class TestFetchToken:
    """GET realm?service=&scope= with Basic or anonymous; token JSON parsed."""

    async def test_credentialed_request(self, serve: Serve, transport: Transport) -> None:
        """Basic auth, service and scope go to the realm; the token comes back as a Secret."""
        server = serve(_token_endpoint)
        challenge = _bearer(server.url() + "/token", service="test-registry")
        token = await fetch_token(
            transport, challenge, "repository:team/app:pull", USER, Secret(PASSWORD)
        )
        [request] = server.requests
        assert request.headers["authorization"] == BASIC
        assert _query(request) == {
            "service": ["test-registry"],
            "scope": ["repository:team/app:pull"],
        }
        assert token.token.reveal() == TOKEN
        assert token.issued_at == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
        assert token.expires_at - token.issued_at == timedelta(seconds=300)
        assert token.scope == "repository:team/app:pull"
        assert token.authorization.reveal() == f"Bearer {TOKEN}"
        assert TOKEN not in repr(token)

    async def test_anonymous_and_several_scopes(self, serve: Serve, transport: Transport) -> None:
        """Without credentials no Authorization is sent; each scope is its own parameter."""
        server = serve(lambda r: _json({"access_token": TOKEN}))
        before = datetime.now(UTC)
        token = await fetch_token(
            transport,
            _bearer(server.url() + "/token?account=x"),
            ["repository:a:pull", "repository:b:pull"],
        )
        [request] = server.requests
        assert "authorization" not in request.headers
        assert _query(request) == {
            "account": ["x"],
            "scope": ["repository:a:pull", "repository:b:pull"],
        }
        assert token.token.reveal() == TOKEN
        assert before <= token.issued_at <= datetime.now(UTC)
        assert token.expires_at - token.issued_at == timedelta(seconds=60)
        assert token.scope == "repository:a:pull repository:b:pull"

    @pytest.mark.parametrize("status", [401, 403])
    async def test_rejected_credential(
        self, serve: Serve, transport: Transport, status: int
    ) -> None:
        """401/403 from the token endpoint is CredentialRejected, without the password or body."""
        server = serve(lambda r: _json({"details": PASSWORD}, status=status))
        with pytest.raises(CredentialRejected) as caught:
            await fetch_token(transport, _bearer(server.url() + "/t"), "s", USER, Secret(PASSWORD))
        assert f"127.0.0.1:{server.port}" in str(caught.value)
        assert PASSWORD not in str(caught.value)

    async def test_rate_limited(self, serve: Serve, transport: Transport) -> None:
        """429 is RateLimited with the Retry-After seconds."""
        server = serve(lambda r: Reply(429, {"Retry-After": "7"}))
        with pytest.raises(RateLimited) as caught:
            await fetch_token(transport, _bearer(server.url() + "/t"), "s")
        assert caught.value.retry_after == 7.0
        assert caught.value.temporary

    @pytest.mark.parametrize(
        "body",
        [
            f"<html>{TOKEN}</html>".encode(),
            json.dumps({"tokn": TOKEN}).encode(),
            json.dumps({"token": ""}).encode(),
            json.dumps([TOKEN]).encode(),
        ],
    )
    async def test_unusable_answer(self, serve: Serve, transport: Transport, body: bytes) -> None:
        """A 200 without a token is a protocol error that does not echo the body."""
        server = serve(lambda r: Reply(200, {}, body))
        with pytest.raises(RegistryProtocolError) as caught:
            await fetch_token(transport, _bearer(server.url() + "/t"), "s")
        assert TOKEN not in str(caught.value)

    @pytest.mark.parametrize("expires_in", [-5, 0, "300", True, None])
    async def test_bad_expires_in_defaults(
        self, serve: Serve, transport: Transport, expires_in: object
    ) -> None:
        """A missing or nonsensical expires_in means the spec's default of 60 s."""
        server = serve(
            lambda r: _json({"token": TOKEN, "expires_in": expires_in, "issued_at": "junk"})
        )
        token = await fetch_token(transport, _bearer(server.url() + "/t"), "s")
        assert token.expires_at - token.issued_at == timedelta(seconds=60)
        assert token.remaining() > timedelta(seconds=50)


class TestRealmSafety:
    """Credentials never go to a plain-http realm of an https registry, or to no realm."""

    async def test_http_realm_for_https_registry(self, serve: Serve, transport: Transport) -> None:
        """An http realm is refused before any request when the registry is https."""
        plain = serve(_token_endpoint, tls=False)
        with pytest.raises(UnsupportedAuth, match="not https"):
            await fetch_token(
                transport,
                _bearer(plain.url() + "/token"),
                "s",
                USER,
                Secret(PASSWORD),
                registry_url="https://registry.example",
            )
        with pytest.raises(UnsupportedAuth, match="not https"):
            await fetch_token(
                transport, _bearer(plain.url() + "/token"), "s", USER, Secret(PASSWORD)
            )
        assert plain.requests == []

    async def test_http_realm_for_http_registry(self, serve: Serve, transport: Transport) -> None:
        """A plain-http test registry may use a plain-http realm."""
        plain = serve(_token_endpoint, tls=False)
        token = await fetch_token(
            transport,
            _bearer(plain.url() + "/token"),
            "s",
            USER,
            Secret(PASSWORD),
            registry_url=plain.url(),
        )
        assert token.token.reveal() == TOKEN

    @pytest.mark.parametrize(
        ("challenge", "why"),
        [
            (Challenge("basic", {"realm": "https://a"}), "only bearer"),
            (Challenge("bearer", {"service": "x"}), "no token realm"),
            (Challenge("bearer", {"realm": "ftp://a/t"}), "not https"),
        ],
    )
    async def test_unusable_challenge(
        self, transport: Transport, challenge: Challenge, why: str
    ) -> None:
        """Non-bearer, realm-less or non-http realms raise UnsupportedAuth."""
        with pytest.raises(UnsupportedAuth, match=why):
            await fetch_token(transport, challenge, "s")


class TestBasicAuthorization:
    """The Basic header helper."""

    def test_header_value(self) -> None:
        """Basic base64(user:password), wrapped in a Secret that never renders."""
        value = basic_authorization(USER, Secret(PASSWORD))
        assert value.reveal() == BASIC
        assert PASSWORD not in repr(value)
        assert BASIC not in str(value)

    def test_bearer_token_is_frozen_and_quiet(self) -> None:
        """BearerToken's repr does not reveal the token."""
        now = datetime.now(UTC)
        token = BearerToken(Secret(TOKEN), now, now + timedelta(seconds=60), "s")
        assert TOKEN not in repr(token)
        assert isinstance(CredentialRejected("x"), RegistryError)
