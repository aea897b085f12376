"""The registry HTTP rules, table-driven: redirects, 401 mapping, Content-Range, purity.

Both HTTP stacks (the broker's Transport, the node's BlobFetcher) follow these; their own
tests only show that each one asks (a real server that must not see Authorization).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    ManifestUnknown,
    NotAllowed,
    RateLimited,
    RegistryError,
    RegistryProtocolError,
)
from pullbroker_client.registry.rules import (
    MAX_REDIRECTS,
    ContentRange,
    Hop,
    answer_error,
    first_hop,
    next_hop,
    parse_content_range,
    range_matches,
    same_origin,
    unauthorized,
)
from pullbroker_client.secret import Secret

TOKEN = Secret("Bearer rules-canary-5f1e")
START = "https://registry.test/v2/team/app/blobs/sha256:abc"


def _hop(url: str = START, method: str = "GET", authorization: Secret | None = TOKEN) -> Hop:
    return first_hop(url, authorization, method=method)


class TestAuthorizationAcrossRedirects:
    """Authorization goes along only to the first origin, and never comes back once dropped."""

    @pytest.mark.parametrize(
        ("location", "keeps"),
        [
            ("/v2/team/app/blobs/other", True),  # relative: same origin
            ("https://registry.test/elsewhere", True),
            ("https://REGISTRY.test:443/elsewhere", True),  # case and default port
            ("https://storage.test/bucket/blob?sig=abc", False),  # other host
            ("//storage.test/blob", False),  # scheme-relative, other host
            ("https://registry.test:5000/x", False),  # other port
            ("https://127.0.0.1/x", False),  # the same machine by another name
        ],
    )
    def test_origin_decides(self, location: str, keeps: bool) -> None:
        """Same scheme, host and port keep the header; anything else drops it."""
        hop = next_hop(_hop(), 307, location)
        assert (hop.authorization is TOKEN) is keeps
        assert hop.authorization is TOKEN or hop.authorization is None

    def test_other_scheme_drops_it(self) -> None:
        """http -> https on the same host is another origin (test registries start on http)."""
        hop = next_hop(_hop("http://registry.test/v2/"), 302, "https://registry.test/v2/")
        assert hop.authorization is None

    def test_back_at_the_first_origin_it_stays_dropped(self) -> None:
        """registry -> storage -> registry: the third hop has no Authorization either."""
        away = next_hop(_hop(), 307, "https://storage.test/blob")
        back = next_hop(away, 302, "https://registry.test/v2/team/app/blobs/final")
        assert (away.authorization, back.authorization) == (None, None)

    def test_hop_knows_where_it_came_from(self) -> None:
        """Each hop counts redirects and names the host whose redirect led there."""
        hop = next_hop(_hop(), 307, "https://storage.test:8443/blob?sig=abc")
        assert (hop.url, hop.redirects, hop.via) == (
            "https://storage.test:8443/blob?sig=abc",
            1,
            "registry.test",
        )
        assert hop.host == "storage.test:8443"


class TestMethod:
    """303 means GET (except for HEAD); other redirects keep the method."""

    @pytest.mark.parametrize(
        ("method", "status", "after"),
        [
            ("GET", 303, "GET"),
            ("HEAD", 303, "HEAD"),
            ("POST", 303, "GET"),
            ("HEAD", 301, "HEAD"),
            ("HEAD", 302, "HEAD"),
            ("HEAD", 307, "HEAD"),
            ("GET", 308, "GET"),
        ],
    )
    def test_method_after_redirect(self, method: str, status: int, after: str) -> None:
        """The method the next hop is sent with."""
        assert next_hop(_hop(method=method), status, "/next").method == after


class TestRefusedRedirects:
    """Redirects that are not followed at all, each a RegistryProtocolError naming the host."""

    @pytest.mark.parametrize(
        ("start", "location", "says"),
        [
            (START, "http://registry.test/x", "refusing the downgrade"),
            (START, "http://storage.test/x", "refusing the downgrade"),
            (START, None, "without a Location"),
            (START, "", "without a Location"),
            (START, "  ", "without a Location"),
            (START, "ftp://registry.test/x", "non-HTTP URL"),
            (START, "file:///etc/passwd", "non-HTTP URL"),
            (START, "https://registry.test:port/x", "bad URL"),
            (START, "https://[::1/x", "bad URL"),
        ],
    )
    def test_refused(self, start: str, location: str | None, says: str) -> None:
        """The message says why and names the redirecting host, never the target's query."""
        with pytest.raises(RegistryProtocolError, match=says) as caught:
            next_hop(_hop(start), 302, location)
        assert "registry.test" in str(caught.value)

    def test_plain_http_may_go_to_https(self) -> None:
        """An http test registry redirecting to https is an upgrade, followed."""
        assert next_hop(_hop("http://registry.test/"), 301, "https://storage.test/").url == (
            "https://storage.test/"
        )

    def test_too_many_redirects(self) -> None:
        """MAX_REDIRECTS are followed; the next one is refused."""
        hop = _hop()
        for _ in range(MAX_REDIRECTS):
            hop = next_hop(hop, 302, "/again")
        with pytest.raises(RegistryProtocolError, match=f"more than {MAX_REDIRECTS} times"):
            next_hop(hop, 302, "/again")

    def test_a_lower_limit(self) -> None:
        """A caller's own limit counts the same way."""
        with pytest.raises(RegistryProtocolError, match="more than 0 times"):
            next_hop(_hop(), 302, "/again", limit=0)

    def test_not_a_redirect(self) -> None:
        """Asking where a 200 leads is a programming error, not a registry's."""
        with pytest.raises(ValueError, match="not a redirect"):
            next_hop(_hop(), 200, "/x")


class TestFirstHop:
    """Where a chain may start."""

    @pytest.mark.parametrize(
        ("url", "https_only", "says"),
        [
            ("http://registry.test/v2/", True, "not https://"),
            ("ftp://registry.test/v2/", False, "not an http"),
            ("registry.test/v2/", False, "not an http"),
            ("https:///v2/", False, "not an http"),
            ("https://registry.test:x/v2/", False, "not a valid URL"),
        ],
    )
    def test_refused(self, url: str, https_only: bool, says: str) -> None:
        """The node's fetcher starts only on https; nobody starts on another scheme."""
        with pytest.raises(RegistryProtocolError, match=says):
            first_hop(url, TOKEN, https_only=https_only)

    def test_plain_http_for_test_registries(self) -> None:
        """The broker's Transport may start on http (test registries); the hop is unchanged."""
        hop = first_hop("http://127.0.0.1:5000/v2/", TOKEN, method="HEAD")
        assert (hop.method, hop.authorization, hop.redirects, hop.via) == ("HEAD", TOKEN, 0, "")

    @pytest.mark.parametrize(
        ("a", "b", "same"),
        [
            ("https://h/x", "https://h:443/y?q", True),
            ("http://h/x", "http://h:80/", True),
            ("https://h/x", "http://h/x", False),
            ("https://[::1]:5000/", "https://[::1]:5000/v2/", True),
            ("https://h:5000/", "https://h:5001/", False),
        ],
    )
    def test_same_origin(self, a: str, b: str, same: bool) -> None:
        """Scheme, host and effective port."""
        assert same_origin(a, b) is same


CHALLENGE = 'Bearer realm="https://auth.test/token",service="reg",scope="repository:a:pull"'


class TestFailedAnswers:
    """Which registry error a failed answer becomes."""

    @pytest.mark.parametrize(
        ("challenges", "error", "code"),
        [
            ([CHALLENGE + ',error="insufficient_scope"'], NotAllowed, "insufficient_scope"),
            ([CHALLENGE + ',error="invalid_token"'], AuthenticationRequired, None),
            ([CHALLENGE], AuthenticationRequired, None),
            ([], AuthenticationRequired, None),
            (["Bearer ,,,=broken"], AuthenticationRequired, None),
            (['Basic realm="r"', CHALLENGE + ',error="insufficient_scope"'], NotAllowed, None),
        ],
    )
    def test_401_reads_the_challenge(
        self, challenges: list[str], error: type[RegistryError], code: str | None
    ) -> None:
        """insufficient_scope: a fresh token will not help; anything else: it may."""
        found = unauthorized(challenges, "registry.test:5000", "manifest v1 of team/app")
        assert type(found) is error
        assert "registry.test:5000" in str(found)
        assert "manifest v1 of team/app" in str(found)
        if code is not None:
            assert found.code == code

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (401, b"", AuthenticationRequired),
            (403, b"", NotAllowed),
            (403, b'{"errors":[{"code":"DENIED","message":"no"}]}', NotAllowed),
            (404, b"", BlobUnknown),
            (404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', ManifestUnknown),
            (429, b"", RateLimited),
            (503, b"", RegistryProtocolError),
        ],
    )
    def test_answer_error(self, status: int, body: bytes, error: type[RegistryError]) -> None:
        """401 through the challenge; the rest by the body's code, else the status."""
        found = answer_error(
            status,
            challenges=[CHALLENGE],
            body=body,
            host="registry.test",
            subject="blob sha256:abc of team/app",
            not_found=BlobUnknown,
        )
        assert type(found) is error
        assert found.temporary is (status in (429, 503))


class TestContentRange:
    """A 206 is used only when it carries exactly the bytes asked for."""

    @pytest.mark.parametrize(
        ("value", "parsed"),
        [
            ("bytes 10-99/100", ContentRange(10, 99, 100)),
            (" bytes 0-0/* ", ContentRange(0, 0, None)),
            ("bytes 10-99", None),
            ("bytes=10-99/100", None),
            ("bytes 10-/100", None),
            ("items 10-99/100", None),
            ("bytes */100", None),
            ("bytes 10-99/100, 0-9/100", None),
        ],
    )
    def test_parse(self, value: str, parsed: ContentRange | None) -> None:
        """One byte range, with a total or `*`; anything else is None."""
        assert parse_content_range(value) == parsed

    @pytest.mark.parametrize(
        ("content_range", "content_length", "matches"),
        [
            ("bytes 10-99/100", "90", True),  # exact
            ("bytes 10-99/*", None, True),  # total unknown to the server
            ("bytes 0-99/100", "100", False),  # wrong start: the whole blob as a 206
            ("bytes 11-99/100", "89", False),  # wrong start
            ("bytes 10-98/100", "89", False),  # stops short
            ("bytes 10-99/101", "90", False),  # another blob's size
            ("bytes 10-99/100x", "90", False),  # not a Content-Range
            (None, "90", True),  # a proxy dropped Content-Range: the length is exact
            (None, "100", False),  # ...or it is the whole blob
            (None, None, False),  # nothing says which bytes these are
        ],
    )
    def test_range_matches(
        self, content_range: str | None, content_length: str | None, matches: bool
    ) -> None:
        """Asked for bytes 10- of a 100-byte blob."""
        assert range_matches(content_range, content_length, 10, 100) is matches


class TestPurity:
    """The rules import no HTTP stack and do no I/O: both stacks can call them."""

    def test_imports_no_http_stack(self) -> None:
        """Importing rules.py loads neither httpx, httpcore, http.client nor ssl."""
        script = (
            "import sys, pullbroker_client.registry.rules\n"
            "stacks = {'httpx', 'httpcore', 'http.client', 'ssl', 'socket'}\n"
            "print(sorted(stacks & set(sys.modules)))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert loaded == "[]"

    def test_hop_never_renders_the_token(self) -> None:
        """A Hop in a log line or traceback shows the Secret's placeholder only."""
        assert "rules-canary" not in repr(_hop())


class TestExports:
    """The package's lazy exports name live modules only (no retired client)."""

    def test_every_export_resolves(self) -> None:
        """Each name in pullbroker_client.registry.__all__ imports, the rules among them."""
        import pullbroker_client.registry as registry

        resolved = {name: getattr(registry, name) for name in registry.__all__}
        assert resolved["next_hop"] is next_hop
        assert "RegistryClient" not in resolved
