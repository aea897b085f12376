"""SSRF through redirects: a hostile registry on 127.0.0.1 redirects the /v2/ ping, the token
request and the probe's tags/list to a host the broker must not dial. The broker refuses at
the hop, and the redirect target (a live server on this host) is never contacted.

`evil.test` resolves, through the injected resolver only, to this host *and* to the metadata
address: one reachable answer must not let a host with a refused one through. The target's
certificate names evil.test, so a dial the guard let through would be served and recorded;
LoopbackOnly fails any connect off this host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import InvalidRegistry, UpstreamProtocolError
from pullbroker_service.domain.hosts import DialPolicy
from pullbroker_service.domain.model import BasicCredential, RegistryKind, RegistryRecord
from pullbroker_service.minting.bearer import BearerMinter

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request
from tests.harness.loopback_only import LoopbackOnly, named_server

LOOPBACK_OK = DialPolicy(allow_loopback=True)
PASSWORD = "hunter2-long-lived"


EVIL = ["127.0.0.1", "169.254.169.254"]


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[LoopbackOnly]:
    """A guard that lets a refused address through fails here, before any packet leaves."""
    with LoopbackOnly() as guard:
        yield guard


class Resolver:
    """registry.test and evil.test, counted; nothing else resolves (no DNS is asked)."""

    def __init__(self, evil: list[str] | None = None) -> None:
        self.lookups: list[str] = []
        self.evil = EVIL if evil is None else evil

    async def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        answers = {"registry.test": ["127.0.0.1"], "evil.test": self.evil}
        if host not in answers:
            raise OSError("name does not resolve")
        return answers[host]


@pytest.fixture
def target(test_ca: TestCA) -> Iterator[HTTPSServer]:
    """The redirect target: answers anything, and must see nothing."""
    answer = Reply(200, body=b'{"token": "from-evil"}')
    with named_server(test_ca, "evil.test", lambda _r: answer) as server:
        yield server


def record_for(port: int, ca_pem: str) -> RegistryRecord:
    now = datetime.now(UTC)
    url, host = f"https://registry.test:{port}", f"registry.test:{port}"
    return RegistryRecord(
        "r1", "hostile", RegistryKind.GENERIC, url, host, "", ca_pem, "", False, 0, None, "",
        now, now, "e",
    )  # fmt: skip


def to_evil(port_of_target: int, path: str, status: int = 302) -> Reply:
    return Reply(
        status, {"Location": f"https://evil.test:{port_of_target}{path}?X-Amz-Signature=s3cr3t"}
    )


def hostile(
    port_of_target: int, redirect_path: str, via: str | None = None
) -> Callable[[Request], Reply]:
    """A registry with token auth that redirects `redirect_path` to evil.test, or first to
    `via` (a base URL) when given."""

    def handler(request: Request) -> Reply:
        path = request.path.split("?", 1)[0]
        if path == redirect_path:
            if via is not None:
                return Reply(307, {"Location": f"{via}{path}"})
            return to_evil(port_of_target, path)
        if path == "/v2/":
            realm = f"https://registry.test:{request.headers['host'].split(':')[1]}/token"
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="t"'})
        if path == "/token":
            return Reply(200, {"Content-Type": "application/json"}, b'{"token": "tok"}')
        return Reply(200, body=b'{"name": "team/app", "tags": ["v1"]}')

    return handler


async def _mint(minter: BearerMinter, record: RegistryRecord) -> None:
    credential = BasicCredential("robot", Secret(PASSWORD))
    try:
        await minter.mint(record, credential, "team/app")
    finally:
        await minter.aclose()


class TestRedirectsAreGuarded:
    """Every hop of the broker's requests passes the dial guard."""

    @pytest.mark.parametrize("path", ["/v2/", "/token"])
    async def test_mint_refuses_redirect(
        self, test_ca: TestCA, target: HTTPSServer, path: str
    ) -> None:
        """A redirected ping or token request to a refused host fails the mint, naming the
        hop, never the signed query or the credential."""
        resolver = Resolver()
        minter = BearerMinter(timeout=5.0, dial_policy=LOOPBACK_OK, resolve=resolver)
        with (
            HTTPSServer(hostile(target.port, path), test_ca) as registry,
            pytest.raises(UpstreamProtocolError) as caught,
        ):
            await _mint(minter, record_for(registry.port, test_ca.pem))
        message = str(caught.value)
        assert f"registry.test:{registry.port} redirected to evil.test resolves to" in message
        assert "169.254.169.254, which is a cloud metadata service address" in message
        assert "s3cr3t" not in message
        assert PASSWORD not in message
        assert "evil.test" in resolver.lookups
        assert target.requests == []

    @pytest.mark.parametrize(
        "answers",
        [
            EVIL,
            ["169.254.169.254"],
            ["64:ff9b::a9fe:a9fe"],  # metadata through NAT64
        ],
    )
    async def test_mint_refuses_second_redirect_of_token_request(
        self, test_ca: TestCA, target: HTTPSServer, answers: list[str]
    ) -> None:
        """/token redirected to an allowed host (127.0.0.1), which redirects to evil.test:
        the second hop is judged too; the error names it and evil.test sees nothing."""
        resolver = Resolver(answers)
        minter = BearerMinter(timeout=5.0, dial_policy=LOOPBACK_OK, resolve=resolver)

        def onward(request: Request) -> Reply:
            return to_evil(target.port, request.path.split("?", 1)[0], 307)

        with (
            HTTPSServer(onward, test_ca) as hop,
            HTTPSServer(hostile(target.port, "/token", via=hop.url()), test_ca) as registry,
            pytest.raises(UpstreamProtocolError) as caught,
        ):
            await _mint(minter, record_for(registry.port, test_ca.pem))
        message = str(caught.value)
        assert f"127.0.0.1:{hop.port} redirected to evil.test resolves to" in message
        assert f"registry.test:{registry.port} redirected" not in message
        assert "cloud metadata service address" in message
        assert "s3cr3t" not in message
        assert PASSWORD not in message
        assert resolver.lookups.count("evil.test") == 1
        assert [r.url_path for r in hop.requests] == ["/token"]
        assert target.requests == []

    async def test_probe_refuses_redirected_tags_list(
        self, test_ca: TestCA, target: HTTPSServer
    ) -> None:
        """The probe's tags/list redirected to a refused host is reported, not followed."""
        minter = BearerMinter(timeout=5.0, dial_policy=LOOPBACK_OK, resolve=Resolver())
        path = "/v2/team/app/tags/list"
        with HTTPSServer(hostile(target.port, path), test_ca) as registry:
            try:
                result = await minter.probe(
                    record_for(registry.port, test_ca.pem),
                    BasicCredential("robot", Secret(PASSWORD)),
                    "team/app",
                )
            finally:
                await minter.aclose()
        assert result.outcome == "unsupported_auth"
        assert "redirected to evil.test" in result.message
        assert "s3cr3t" not in result.message
        assert "tok" not in result.message.split()
        assert target.requests == []

    async def test_foreign_ping_challenge_is_not_used(self, test_ca: TestCA) -> None:
        """A ping redirected to another (allowed) origin: its challenge names a realm that
        must get no credential, and none is sent there."""
        realm_server = HTTPSServer(lambda _r: Reply(200, body=b'{"token": "x"}'), test_ca)

        def foreign(_r: Request) -> Reply:
            realm = f"https://registry.test:{realm_server.port}/token"
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="t"'})

        minter = BearerMinter(timeout=5.0, dial_policy=LOOPBACK_OK, resolve=Resolver())
        with realm_server, HTTPSServer(foreign, test_ca) as other:
            moved = Reply(302, {"Location": f"https://registry.test:{other.port}/v2/"})
            with (
                HTTPSServer(lambda _r: moved, test_ca) as registry,
                pytest.raises(UpstreamProtocolError, match="redirected GET /v2/ to another"),
            ):
                await _mint(minter, record_for(registry.port, test_ca.pem))
        assert realm_server.requests == []

    async def test_record_host_refused_as_invalid_registry(self, test_ca: TestCA) -> None:
        """The record's own host resolving to a refused address is a bad record
        (INVALID_ARGUMENT), named as the registry url with the setting that allows it."""
        minter = BearerMinter(timeout=5.0, resolve=Resolver())  # strict: no loopback
        with (
            HTTPSServer(lambda _r: Reply(200), test_ca) as registry,
            pytest.raises(InvalidRegistry) as caught,
        ):
            await _mint(minter, record_for(registry.port, test_ca.pem))
        assert str(caught.value) == (
            "registry url host registry.test resolves to 127.0.0.1, which is a loopback "
            "address: refused; to allow it, start the broker with a config file holding "
            "`allow_loopback_registries: true` (`pullbroker serve --config FILE`, or "
            "`make run CONFIG=FILE`)"
        )
        assert registry.requests == []
