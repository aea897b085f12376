"""The dial guard inside the Transport: every hop is judged, and the checked address is the
one connected to. Names here resolve only through an injected resolver: no DNS, and nothing
is ever sent off this host (refused addresses are refused before any connect; LoopbackOnly
makes any other connect fail the test)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from pullbroker_client.registry.addresses import DialPolicy
from pullbroker_client.registry.auth import ping
from pullbroker_client.registry.errors import DialRefused, RegistryProtocolError
from pullbroker_client.registry.transport import Transport

from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request
from tests.harness.loopback_only import LoopbackOnly, named_server
from tests.unit.client.registry.conftest import Serve

LOOPBACK_OK = DialPolicy(allow_loopback=True)


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[LoopbackOnly]:
    """A guard that lets a refused address through fails here, before any packet leaves."""
    with LoopbackOnly() as guard:
        yield guard


class Resolver:
    """Answers each name from a list of answer sets, one per lookup (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        sets = self.answers.get(host)
        if not sets:
            raise OSError("name does not resolve")
        seen = self.lookups.count(host)
        return sets[min(seen, len(sets)) - 1]


def redirect_to(location: str, status: int = 302) -> Reply:
    return Reply(status, {"Location": location})


class TestRedirectHops:
    """A redirect to a host with a refused address is not followed; nothing is dialled there."""

    @pytest.mark.parametrize("hops", [1, 2], ids=["first-redirect", "second-redirect"])
    @pytest.mark.parametrize(
        "answers",
        [
            ["169.254.169.254"],
            ["127.0.0.1", "fd00:ec2::254"],  # one reachable address does not save it
            ["64:ff9b::a9fe:a9fe"],  # metadata through NAT64
        ],
    )
    async def test_refused_before_connect(
        self, serve: Serve, test_ca: TestCA, answers: list[str], hops: int
    ) -> None:
        """DialRefused names the redirecting host and the refused one; the target saw nothing.

        With hops=2 the registry first redirects to an allowed host (127.0.0.1), which then
        redirects to evil.test: the guard judges every hop, not only the first redirect's.
        The target's certificate names evil.test, so a dial that got through would be
        served and recorded."""
        target = named_server(test_ca, "evil.test", lambda _r: Reply(200, body=b"{}")).start()
        try:
            refused = f"https://evil.test:{target.port}/x?sig=s3cr3t"
            hop = serve(lambda _r: redirect_to(refused, 307))
            first = refused if hops == 1 else f"{hop.url()}/moved"
            registry = serve(lambda _r: redirect_to(first, 307 if hops == 2 else 302))
            via = registry if hops == 1 else hop
            resolver = Resolver({"evil.test": [answers]})
            async with Transport(ca_pem=test_ca.pem, resolve=resolver) as transport:
                with pytest.raises(DialRefused) as caught:
                    await transport.request("GET", f"{registry.url()}/v2/team/app/tags/list")
        finally:
            target.stop()
        assert caught.value.via == f"127.0.0.1:{via.port}"
        assert caught.value.host == "evil.test"
        assert str(caught.value).startswith(f"127.0.0.1:{via.port} redirected to evil.test")
        assert "s3cr3t" not in str(caught.value)
        assert "/x" not in str(caught.value)
        assert resolver.lookups == ["evil.test"]
        assert len(hop.requests) == hops - 1  # the chain really went through the allowed hop
        assert target.requests == []

    async def test_literal_redirect_target(self, serve: Serve, test_ca: TestCA) -> None:
        """A literal address in Location is judged as written, without a lookup."""
        registry = serve(lambda _r: redirect_to("https://[::ffff:169.254.169.254]/latest"))
        resolver = Resolver({})
        async with Transport(ca_pem=test_ca.pem, resolve=resolver) as transport:
            with pytest.raises(DialRefused, match=r"carries IPv4 169\.254\.169\.254"):
                await transport.request("GET", registry.url())
        assert resolver.lookups == []

    async def test_policy_ranges_apply_to_hops(self, serve: Serve, test_ca: TestCA) -> None:
        """A hop is judged by the transport's policy: private is refused when not allowed."""
        registry = serve(lambda _r: redirect_to("https://internal.test/token"))
        resolver = Resolver({"internal.test": [["10.1.2.3"]]})
        async with Transport(
            ca_pem=test_ca.pem, dial_policy=LOOPBACK_OK, resolve=resolver
        ) as transport:
            with pytest.raises(
                DialRefused, match=r"internal.test resolves to 10\.1\.2\.3.*private"
            ):
                await transport.request("GET", registry.url())
        assert resolver.lookups == ["internal.test"]


class TestPinning:
    """The guard resolves once per connection and connects to the address it checked."""

    async def test_rebinding_answer_is_never_used(self, serve: Serve, test_ca: TestCA) -> None:
        """A name that answers loopback, then metadata, is connected once, to loopback,
        with the original name as Host (TLS verified against it too)."""
        registry = serve(lambda _r: Reply(200, body=b"ok"))
        resolver = Resolver({"registry.test": [["127.0.0.1"], ["169.254.169.254"]]})
        url = f"https://registry.test:{registry.port}/v2/"
        async with Transport(
            ca_pem=test_ca.pem, dial_policy=LOOPBACK_OK, resolve=resolver
        ) as transport:
            response = await transport.request("GET", url)
        assert response.status_code == 200
        assert response.content == b"ok"
        assert resolver.lookups == ["registry.test"]
        assert registry.requests[0].headers["host"] == f"registry.test:{registry.port}"

    async def test_new_connection_is_judged_again(self, serve: Serve, test_ca: TestCA) -> None:
        """A fresh connection resolves again and refuses the rebound answer."""
        registry = serve(lambda _r: Reply(200, body=b"ok", close=True))
        resolver = Resolver({"registry.test": [["127.0.0.1"], ["169.254.169.254"]]})
        url = f"https://registry.test:{registry.port}/v2/"
        async with Transport(
            ca_pem=test_ca.pem, dial_policy=LOOPBACK_OK, resolve=resolver
        ) as transport:
            await transport.request("GET", url)
            with pytest.raises(DialRefused, match=r"registry\.test resolves to 169\.254\.169\.254"):
                await transport.request("GET", url)
        assert len(registry.requests) == 1


class TestRedirectedPing:
    """A /v2/ ping answered by another origin is not the registry's challenge."""

    async def test_foreign_challenge_is_refused(self, serve: Serve, test_ca: TestCA) -> None:
        """The 401 and realm of a host the ping was redirected to are not used."""

        def foreign(_r: Request) -> Reply:
            return Reply(401, {"WWW-Authenticate": 'Bearer realm="https://localhost/t"'})

        other = serve(foreign)
        registry = serve(lambda _r: redirect_to(f"https://localhost:{other.port}/v2/"))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryProtocolError, match="redirected GET /v2/ to another host"):
                await ping(transport, registry.url())

    async def test_same_origin_redirect_is_followed(self, serve: Serve, test_ca: TestCA) -> None:
        """A redirect within the registry's origin still yields its challenge."""

        def handler(request: Request) -> Reply:
            if request.path == "/v2/":
                return redirect_to("/v2/auth")
            return Reply(401, {"WWW-Authenticate": 'Bearer realm="https://127.0.0.1/t"'})

        registry = serve(handler)
        async with Transport(ca_pem=test_ca.pem) as transport:
            challenges = await ping(transport, registry.url())
        assert [c.realm for c in challenges] == ["https://127.0.0.1/t"]
