"""Transport against real local HTTPS servers: trust, redirects, error mapping, secrecy."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pullbroker_client.registry.errors import (
    RegistryError,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
)
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.registry.transport import Transport, parse_retry_after
from pullbroker_client.secret import Secret

from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request
from tests.harness.process import free_port
from tests.unit.client.registry.conftest import Serve

CANARY = "canary-7c1e4a2b-registry-token"
AUTH = Secret(f"Bearer {CANARY}")


def _ok(request: Request) -> Reply:
    return Reply(200, {"Content-Type": "text/plain"}, b"hello")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _assert_no_canary(exc: BaseException) -> None:
    for link in _chain(exc):
        assert CANARY not in str(link)
        assert CANARY not in repr(link)


class TestTrust:
    """TLS trust comes from the given PEM or the system store, never the environment."""

    def test_given_ca_is_the_only_trust(self, test_ca: TestCA) -> None:
        """ssl_context(pem) holds exactly that CA and requires a verified, named peer."""
        context = ssl_context(test_ca.pem)
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "pullbroker session test CA"),),)
        ]
        assert context.check_hostname

    def test_no_ca_means_the_system_store(self) -> None:
        """Without a PEM the context holds the system's CA store (OpenSSL's own location)."""
        context = ssl_context(None)
        assert context.cert_store_stats()["x509_ca"] > 0
        assert context.verify_mode is ssl.CERT_REQUIRED

    async def test_given_ca_connects(self, serve: Serve, test_ca: TestCA) -> None:
        """A server whose certificate chains to the given CA is reached."""
        server = serve(_ok)
        async with Transport(ca_pem=test_ca.pem) as transport:
            response = await transport.request("GET", server.url() + "/x")
        assert (response.status_code, response.content) == (200, b"hello")

    async def test_environment_does_not_add_trust(
        self, serve: Serve, ca_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With SSL_CERT_FILE etc. pointing at the test CA, system trust still refuses it."""
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.setenv(name, str(ca_file))
        monkeypatch.setenv("SSL_CERT_DIR", str(ca_file.parent))
        server = serve(_ok)
        async with Transport(ca_pem=None) as transport:
            with pytest.raises(RegistryTLSError, match="registry_ca_pem"):
                await transport.request("GET", server.url() + "/x")
        assert server.requests == []

    async def test_wrong_ca_is_a_tls_error(self, serve: Serve, other_ca: TestCA) -> None:
        """A certificate from another CA fails with a message naming the host and what to check."""
        server = serve(_ok)
        async with Transport(ca_pem=other_ca.pem) as transport:
            with pytest.raises(RegistryTLSError) as caught:
                await transport.request("GET", server.url() + "/x", authorization=AUTH)
        message = str(caught.value)
        assert f"127.0.0.1:{server.port}" in message
        assert "registry_ca_pem" in message
        assert not caught.value.temporary
        _assert_no_canary(caught.value)

    async def test_https_to_plain_http_is_explained(self, serve: Serve, test_ca: TestCA) -> None:
        """Speaking TLS to a plain-HTTP server hints at using an http:// URL."""
        server = serve(_ok, tls=False)
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryTLSError, match="plain HTTP"):
                await transport.request("GET", f"https://127.0.0.1:{server.port}/x")

    def test_bad_pem_is_refused(self) -> None:
        """A CA that is not PEM raises RegistryTLSError, not ssl.SSLError."""
        with pytest.raises(RegistryTLSError, match="not a valid PEM"):
            ssl_context("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


class TestNoCookies:
    """A registry's Set-Cookie is never kept: one client serves many credentials."""

    async def test_set_cookie_is_not_sent_back(self, serve: Serve, test_ca: TestCA) -> None:
        """The first answer sets a session cookie (also for the parent domain); neither the
        next request to that registry nor a redirect to another origin carries it."""
        storage = serve(_ok)
        cookies = [("Set-Cookie", "sid=won-with-credential-a; Path=/"),
                   ("Set-Cookie", "wide=1; Domain=localhost; Path=/")]  # fmt: skip
        redirect = [("Location", storage.url("localhost") + "/blob")]

        def answer(request: Request) -> Reply:
            if request.path == "/token":
                return Reply(200, cookies, b"{}")
            return Reply(307, redirect)

        registry = serve(answer)
        async with Transport(ca_pem=test_ca.pem) as transport:
            await transport.request("GET", registry.url() + "/token", authorization=AUTH)
            await transport.request("GET", registry.url() + "/v2/a/blobs/x", authorization=AUTH)
        assert [r.path for r in registry.requests] == ["/token", "/v2/a/blobs/x"]
        assert all("cookie" not in r.headers for r in [*registry.requests, *storage.requests])
        assert [r.path for r in storage.requests] == ["/blob"]


class TestRedirects:
    """Redirects are followed by hand; Authorization never leaves the first origin."""

    async def test_other_host_loses_authorization(self, serve: Serve, test_ca: TestCA) -> None:
        """127.0.0.1 -> localhost (another host): the second server gets no Authorization."""
        storage = serve(lambda r: Reply(200, {}, b"blob bytes"))
        target = storage.url("localhost") + "/bucket/blob?X-Amz-Signature=sig"
        registry = serve(lambda r: Reply(307, {"Location": target}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            response = await transport.request(
                "GET", registry.url() + "/v2/a/blobs/x", authorization=AUTH
            )
        assert response.content == b"blob bytes"
        assert registry.requests[0].headers["authorization"] == f"Bearer {CANARY}"
        [fetched] = storage.requests
        assert "authorization" not in fetched.headers
        assert fetched.path == "/bucket/blob?X-Amz-Signature=sig"

    async def test_other_port_loses_authorization(self, serve: Serve, test_ca: TestCA) -> None:
        """Same host, another port is another origin: Authorization is dropped."""
        storage = serve(lambda r: Reply(200, {}, b"ok"))
        registry = serve(lambda r: Reply(302, {"Location": storage.url() + "/b"}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            await transport.request("GET", registry.url() + "/a", authorization=AUTH)
        assert "authorization" not in storage.requests[0].headers

    async def test_same_origin_keeps_authorization(self, serve: Serve, test_ca: TestCA) -> None:
        """A relative redirect on the same origin keeps Authorization and other headers."""

        def handler(request: Request) -> Reply:
            if request.path == "/first":
                return Reply(301, {"Location": "/second"})
            return Reply(200, {}, b"done")

        server = serve(handler)
        async with Transport(ca_pem=test_ca.pem) as transport:
            response = await transport.request(
                "GET", server.url() + "/first", headers={"Range": "bytes=5-"}, authorization=AUTH
            )
        assert response.content == b"done"
        assert [r.path for r in server.requests] == ["/first", "/second"]
        assert all(r.headers["authorization"] == f"Bearer {CANARY}" for r in server.requests)
        assert server.requests[1].headers["range"] == "bytes=5-"

    async def test_dropped_authorization_stays_dropped(self, serve: Serve, test_ca: TestCA) -> None:
        """A chain that leaves and comes back to the first origin does not regain Authorization."""
        first: list[str] = []

        def registry_handler(request: Request) -> Reply:
            if request.path == "/final":
                return Reply(200, {}, b"back")
            first.append(other.url("localhost") + "/hop")
            return Reply(307, {"Location": first[-1]})

        registry = serve(registry_handler)
        other = serve(lambda r: Reply(307, {"Location": registry.url() + "/final"}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            response = await transport.request("GET", registry.url() + "/start", authorization=AUTH)
        assert response.content == b"back"
        assert "authorization" in registry.requests[0].headers
        assert "authorization" not in registry.requests[1].headers

    async def test_redirect_limit(self, serve: Serve, test_ca: TestCA) -> None:
        """More than five redirects is a protocol error, after exactly six requests."""
        server = serve(lambda r: Reply(302, {"Location": "/again"}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryProtocolError, match="more than 5"):
                await transport.request("GET", server.url() + "/start")
        assert len(server.requests) == 6

    async def test_downgrade_to_http_is_refused(self, serve: Serve, test_ca: TestCA) -> None:
        """https -> http is refused before anything is sent to the plain-HTTP target."""
        plain = serve(_ok, tls=False)
        registry = serve(lambda r: Reply(302, {"Location": plain.url() + "/b"}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryProtocolError, match="downgrade"):
                await transport.request("GET", registry.url() + "/a", authorization=AUTH)
        assert plain.requests == []

    async def test_redirect_without_location(self, serve: Serve, test_ca: TestCA) -> None:
        """A redirect with no Location is a protocol error naming the host."""
        server = serve(lambda r: Reply(307))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryProtocolError, match=f"127.0.0.1:{server.port}"):
                await transport.request("GET", server.url() + "/a")


class TestFailures:
    """Network failures become RegistryUnreachable with a message a person can act on."""

    async def test_closed_port(self, test_ca: TestCA) -> None:
        """Nothing listening: RegistryUnreachable, temporary, naming host and what to check."""
        port = free_port()
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryUnreachable) as caught:
                await transport.request("GET", f"https://127.0.0.1:{port}/v2/", authorization=AUTH)
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert "check" in str(caught.value)
        assert caught.value.temporary
        _assert_no_canary(caught.value)

    async def test_read_timeout(self, serve: Serve, test_ca: TestCA) -> None:
        """A server that does not answer within the timeout gives a temporary error."""

        def slow(request: Request) -> Reply:
            time.sleep(2)
            return Reply(200)

        server = serve(slow)
        async with Transport(ca_pem=test_ca.pem, timeout=0.3) as transport:
            with pytest.raises(RegistryUnreachable, match="timed out") as caught:
                await transport.request("GET", server.url() + "/x")
        assert caught.value.temporary

    async def test_body_cut_short(self, serve: Serve, test_ca: TestCA) -> None:
        """A body shorter than its Content-Length is a temporary RegistryUnreachable."""
        server = serve(lambda r: Reply(200, body=b"x" * 10, length=1000, close=True))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryUnreachable) as caught:
                await transport.request("GET", server.url() + "/x")
        assert caught.value.temporary

    async def test_body_over_limit(self, serve: Serve, test_ca: TestCA) -> None:
        """A document over the read limit is refused instead of buffered."""
        server = serve(lambda r: Reply(200, body=b"x" * 5000))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryProtocolError, match="over 1000 bytes"):
                await transport.request("GET", server.url() + "/x", limit=1000)

    async def test_signed_redirect_url_stays_out_of_errors(
        self, serve: Serve, test_ca: TestCA
    ) -> None:
        """A failing redirect target is named by host only, never its signed query string."""
        port = free_port()
        target = f"https://127.0.0.1:{port}/blob?X-Amz-Signature={CANARY}"
        registry = serve(lambda r: Reply(307, {"Location": target}))
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(RegistryError) as caught:
                await transport.request("GET", registry.url() + "/a", authorization=AUTH)
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert CANARY not in str(caught.value)


class TestSecrecy:
    """The Authorization value never shows in reprs."""

    async def test_response_repr_has_no_query_or_header(
        self, serve: Serve, test_ca: TestCA
    ) -> None:
        """Response repr shows status, host and path only."""
        server = serve(_ok)
        async with Transport(ca_pem=test_ca.pem) as transport:
            response = await transport.request(
                "GET", server.url() + "/p", params={"sig": CANARY}, authorization=AUTH
            )
        assert repr(response) == f"<Response 200 127.0.0.1:{server.port}/p>"
        assert server.requests[0].path == f"/p?sig={CANARY}"

    async def test_authorization_header_must_be_a_secret(self, test_ca: TestCA) -> None:
        """A raw Authorization in headers is refused: it would bypass redaction and redirects."""
        async with Transport(ca_pem=test_ca.pem) as transport:
            with pytest.raises(ValueError, match="authorization=Secret"):
                await transport.request(
                    "GET", "https://127.0.0.1:1/", headers={"authorization": "x"}
                )

    def test_secret_repr(self) -> None:
        """The Secret holding the header renders as [secure]."""
        assert CANARY not in repr(AUTH)
        assert CANARY not in str(AUTH)


class TestRetryAfter:
    """Retry-After in seconds or as an HTTP date."""

    def test_forms(self) -> None:
        """Seconds parse directly, a past date gives 0, junk gives None."""
        assert parse_retry_after("7") == 7.0
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None

    def test_future_date(self) -> None:
        """A date in the future gives the seconds until then."""
        when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
        assert 3000 < (parse_retry_after(when) or 0) <= 3600
