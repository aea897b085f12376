"""A hostile token endpoint (real HTTPS on 127.0.0.1) against the real BearerMinter and cache:
oversized answers, absurd lifetimes, and a body dripped a byte at a time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import RegistryUnreachable, UpstreamProtocolError
from pullbroker_service.domain.hosts import DialPolicy
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.cache import TokenCache

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request

REPOSITORY = "team/app"
KEY = ("hostile", 1, f"repository:{REPOSITORY}:pull")
DRIP_SECONDS = 120.0
"""How long a dripped answer would take to finish; every bound below is far under it."""


@dataclass
class Hostile:
    """A registry whose /v2/ sends clients to its own /token, which answers `token_reply`."""

    token_reply: Callable[[Request], Reply]
    server: HTTPSServer | None = None
    ca_pem: str = ""
    drip_started: threading.Event = field(default_factory=threading.Event)
    drip_ended: threading.Event = field(default_factory=threading.Event)
    drip_finished: bool = False

    def handle(self, request: Request) -> Reply:
        if request.path.startswith("/v2/"):
            assert self.server is not None
            challenge = f'Bearer realm="{self.server.url()}/token",service="hostile"'
            return Reply(401, {"WWW-Authenticate": challenge})
        return self.token_reply(request)

    def drip(self, _request: Request) -> Reply:
        """A 200 whose body comes one byte every 0.1 s, for DRIP_SECONDS."""
        count = int(DRIP_SECONDS * 10)
        self.drip_started.set()

        def parts() -> Iterator[bytes]:
            try:
                for _ in range(count):
                    yield b" "
                    time.sleep(0.1)
                self.drip_finished = True
            finally:  # the write failed (the client hung up), or the drip ran out
                self.drip_ended.set()

        return Reply(200, {"Content-Type": "application/json"}, length=count, body_parts=parts)


def json_reply(document: object, status: int = 200) -> Callable[[Request], Reply]:
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return lambda _request: Reply(status, {"Content-Type": "application/json"}, body=body)


def record_for(server: HTTPSServer, test_ca: TestCA) -> RegistryRecord:
    now = datetime.now(UTC)
    return RegistryRecord(
        "hostile", "hostile", RegistryKind.GENERIC, server.url(), f"127.0.0.1:{server.port}",
        "robot", test_ca.pem, "", False, 1, None, "test", now, now, "e",
    )  # fmt: skip


@pytest.fixture
def hostile_world(
    test_ca: TestCA,
) -> Iterator[Callable[[Callable[[Request], Reply] | None], tuple[Hostile, RegistryRecord]]]:
    """Factory: a hostile registry answering with the given token reply (None: drip)."""
    started: list[HTTPSServer] = []

    def make(reply: Callable[[Request], Reply] | None) -> tuple[Hostile, RegistryRecord]:
        hostile = Hostile(json_reply({}))
        hostile.token_reply = reply or hostile.drip
        server = HTTPSServer(hostile.handle, test_ca).__enter__()
        started.append(server)
        hostile.server, hostile.ca_pem = server, test_ca.pem
        return hostile, record_for(server, test_ca)

    try:
        yield make
    finally:
        for server in started:
            server.__exit__(None, None, None)


@pytest.fixture
async def minter() -> AsyncIterator[BearerMinter]:
    bearer = BearerMinter(timeout=10.0, dial_policy=DialPolicy(allow_loopback=True))
    try:
        yield bearer
    finally:
        await bearer.aclose()


CREDENTIAL = BasicCredential("robot", Secret("hostile-password-123"))
World = Callable[[Callable[[Request], Reply] | None], tuple[Hostile, RegistryRecord]]


class TestOversizedAnswers:
    """Token answers above 64 KiB are refused; the cache stays within its byte budget."""

    async def test_one_mebibyte_token_is_refused(
        self, hostile_world: World, minter: BearerMinter
    ) -> None:
        """A 200 carrying a ~1 MiB token is an UpstreamProtocolError naming the limit."""
        big = {"token": "t" * (1024 * 1024 - 64), "expires_in": 300}
        _, record = hostile_world(json_reply(big))
        with pytest.raises(UpstreamProtocolError, match="over 65536 bytes"):
            await minter.mint(record, CREDENTIAL, REPOSITORY)

    async def test_answer_just_under_the_limit_is_accepted(
        self, hostile_world: World, minter: BearerMinter
    ) -> None:
        """A 60 KiB token (large, but allowed) is minted."""
        _, record = hostile_world(json_reply({"token": "t" * 60_000, "expires_in": 300}))
        token = await minter.mint(record, CREDENTIAL, REPOSITORY)
        assert len(token.token.reveal()) == 60_000

    async def test_cache_stays_within_its_byte_budget(self) -> None:
        """200 tokens of 60 KiB in a 1 MiB cache: the bytes stay under budget, newest kept."""
        cache = TokenCache(max_bytes=1024 * 1024)
        now = datetime.now(UTC)

        def large(i: int) -> Callable[[], asyncio.Future[MintedToken]]:
            token = MintedToken(
                AuthKind.BEARER, "", Secret(f"{i:04d}" + "t" * 60_000), "s", now,
                now + timedelta(minutes=5), REPOSITORY,
            )  # fmt: skip
            future: asyncio.Future[MintedToken] = asyncio.get_running_loop().create_future()
            future.set_result(token)
            return lambda: future

        for i in range(200):
            await cache.get(("r", 1, f"repository:team/app{i}:pull"), large(i))
            assert cache.size_bytes <= 1024 * 1024
        assert 0 < len(cache) < 20
        newest, hit = await cache.get(("r", 1, "repository:team/app199:pull"), large(-1))
        assert hit
        assert newest.token.reveal().startswith("0199")


class TestAbsurdLifetimes:
    """expires_in / issued_at that no registry sends are clamped to 1 h or refused, typed."""

    @pytest.mark.parametrize(
        "body",
        [
            b'{"token": "tok-123456", "expires_in": 1e12}',
            b'{"token": "tok-123456", "expires_in": Infinity}',
            b'{"token": "tok-123456", "expires_in": 1e400}',
            b'{"token": "tok-123456", "expires_in": "Infinity"}',
            b'{"token": "tok-123456", "expires_in": 1' + b"0" * 4000 + b"}",
            b'{"token": "tok-123456", "expires_in": 300, "issued_at": "9999-12-31T23:59:59Z"}',
            b'{"token": "tok-123456", "expires_in": 300, "issued_at": "0001-01-01T00:00:00+05:00"}',
        ],
        ids=["1e12", "Infinity", "1e400", "string", "4000-digits", "year-9999", "year-1-offset"],
    )
    async def test_clamped(self, hostile_world: World, minter: BearerMinter, body: bytes) -> None:
        """The token is minted, expiring within the hour, issued no later than now."""
        _, record = hostile_world(json_reply(body))
        token = await minter.mint(record, CREDENTIAL, REPOSITORY)
        now = datetime.now(UTC)
        assert token.issued_at <= now
        assert token.expires_at <= now + timedelta(hours=1)

    @pytest.mark.parametrize(
        "body",
        [
            b'{"token": "tok-123456", "expires_in": NaN}',
            b'{"token": "tok-123456", "expires_in": 1' + b"0" * 5000 + b"}",
        ],
        ids=["NaN", "5000-digits"],
    )
    async def test_refused(self, hostile_world: World, minter: BearerMinter, body: bytes) -> None:
        """No sane reading: an UpstreamProtocolError (UNKNOWN at the API), not a crash."""
        _, record = hostile_world(json_reply(body))
        with pytest.raises(UpstreamProtocolError):
            await minter.mint(record, CREDENTIAL, REPOSITORY)


class TestDrippingEndpoint:
    """A token endpoint dripping its answer is hung up on when nobody waits or time is up."""

    async def test_last_waiter_leaving_closes_the_connection(
        self, hostile_world: World, minter: BearerMinter
    ) -> None:
        """Two callers share the mint; one leaving keeps it, both leaving hang up upstream."""
        hostile, record = hostile_world(None)
        cache = TokenCache()

        def mint() -> asyncio.Future[MintedToken]:
            return asyncio.ensure_future(minter.mint(record, CREDENTIAL, REPOSITORY))

        callers = [asyncio.ensure_future(cache.get(KEY, mint)) for _ in range(2)]
        assert await asyncio.to_thread(hostile.drip_started.wait, 20.0)
        callers[0].cancel()
        await asyncio.sleep(0.5)
        assert cache.mints_in_flight == 1
        assert not hostile.drip_ended.is_set()
        callers[1].cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        assert cache.mints_in_flight == 0
        assert await asyncio.to_thread(hostile.drip_ended.wait, 20.0)
        assert not hostile.drip_finished

    async def test_mint_deadline_closes_the_connection(
        self, hostile_world: World, minter: BearerMinter
    ) -> None:
        """With a caller still waiting, the mint's own deadline ends it with a typed error."""
        hostile, record = hostile_world(None)
        cache = TokenCache(mint_deadline=1.0)
        with pytest.raises(RegistryUnreachable, match="took longer than 1 s"):
            await cache.get(KEY, lambda: minter.mint(record, CREDENTIAL, REPOSITORY))
        assert cache.mints_in_flight == 0
        assert await asyncio.to_thread(hostile.drip_ended.wait, 20.0)
        assert not hostile.drip_finished
