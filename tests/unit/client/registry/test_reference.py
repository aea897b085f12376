"""parse_reference: Docker's grammar and normalisation, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pullbroker_client.registry.errors import InvalidReference, RegistryError
from pullbroker_client.registry.reference import (
    Reference,
    check_digest,
    check_repository,
    is_digest,
    parse_reference,
)

SHA = "sha256:" + "ab" * 32
SHA512 = "sha512:" + "cd" * 64

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])
_path_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=3),
)
_path = st.lists(_path_component, min_size=1, max_size=4).map("/".join)
_domain_component = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_port = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))
_host = st.one_of(
    st.lists(_domain_component, min_size=1, max_size=4).map(".".join),
    st.just("localhost"),
    st.just("index.docker.io"),
    st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]").filter(lambda h: "." not in h),
)
_domain = st.builds(str.__add__, _host, _port).filter(
    lambda d: "." in d or ":" in d or d == "localhost"
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_digest = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
)


@st.composite
def valid_references(draw: st.DrawFn) -> tuple[str, Reference]:
    """Text built from the grammar, and the Reference it must normalise to."""
    domain = draw(st.none() | _domain)
    path = draw(_path)
    tag = draw(st.none() | _tag)
    digest = draw(st.none() | _digest)
    first = path.split("/")[0]
    # Without a domain, a first component that looks like one would be read as one.
    assume(domain is not None or "/" not in path or ("." not in first and first != "localhost"))
    text = (f"{domain}/" if domain else "") + path
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    host = (domain or "docker.io").lower()
    host = "docker.io" if host == "index.docker.io" else host
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"
    assume(len(host) + 1 + len(path) <= 255)
    expected = Reference(host, path, tag if tag or digest else "latest", digest)
    return text, expected


class TestNormalisation:
    """Docker's defaults: docker.io, library/, latest."""

    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("team/app", "docker.io/team/app:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/library/nginx", "docker.io/library/nginx:latest"),
            ("INDEX.DOCKER.IO/nginx", "docker.io/library/nginx:latest"),
            ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
            ("127.0.0.1:5000/team/app:1.0", "127.0.0.1:5000/team/app:1.0"),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
            ("[fe80::1]/x:t", "[fe80::1]/x:t"),
            ("Registry.Example.COM/a", "registry.example.com/a:latest"),
            (f"nginx@{SHA}", f"docker.io/library/nginx@{SHA}"),
            (f"nginx:1.25@{SHA}", f"docker.io/library/nginx:1.25@{SHA}"),
            (f"quay.io/a/b@{SHA512}", f"quay.io/a/b@{SHA512}"),
            ("localhost:5000", "docker.io/library/localhost:5000"),
            ("a__b/c---d.e_f", "docker.io/a__b/c---d.e_f:latest"),
            ("x/y:" + "T" * 128, "docker.io/x/y:" + "T" * 128),
        ],
    )
    def test_canonical_form(self, text: str, canonical: str) -> None:
        """Each reference normalises to Docker's canonical string."""
        assert str(parse_reference(text)) == canonical

    def test_fields(self) -> None:
        """Docker Hub references connect to registry-1.docker.io and ask for the digest first."""
        ref = parse_reference(f"nginx:1.25@{SHA}")
        assert (ref.domain, ref.path, ref.tag, ref.digest) == (
            "docker.io",
            "library/nginx",
            "1.25",
            SHA,
        )
        assert ref.registry_host == "registry-1.docker.io"
        assert ref.repository == "library/nginx"
        assert ref.identifier == SHA
        assert ref.name == "docker.io/library/nginx"

    def test_other_registry_host_is_domain(self) -> None:
        """Any other registry is contacted at its own host and port; the tag identifies."""
        ref = parse_reference("127.0.0.1:5000/team/app:1.0")
        assert ref.registry_host == "127.0.0.1:5000"
        assert ref.identifier == "1.0"


class TestRejection:
    """Invalid references raise InvalidReference with a message that says why."""

    @pytest.mark.parametrize(
        ("text", "why"),
        [
            ("Nginx", "must be lowercase"),
            ("team/App:1.0", "must be lowercase"),
            ("ghcr.io/Org/app", "must be lowercase"),
            ("", "repository"),
            ("nginx:", "a tag is"),
            ("nginx:-x", "a tag is"),
            ("nginx:" + "t" * 129, "a tag is"),
            ("nginx@", "algorithm:hex"),
            ("nginx@sha256:abc", "64 lowercase hex"),
            ("nginx@sha256:" + "AB" * 32, "64 lowercase hex"),
            ("nginx@sha512:" + "ab" * 32, "128 lowercase hex"),
            ("nginx@md5:" + "ab" * 16, "only sha256 and sha512"),
            ("nginx@" + SHA + "@" + SHA, "64 lowercase hex"),
            ("a//b", "repository"),
            ("a/b/", "repository"),
            ("-a/b", "repository"),
            ("a_/b", "repository"),
            ("a___b", "repository"),
            ("a..b", "repository"),
            ("-host.io/a", "registry host"),
            ("host.io:port/a", "registry host"),
            ("host.io:80:80/a", "registry host"),
            ("[::1/a", "registry host"),
            (" nginx", "repository"),
            ("nginx ", "repository"),
            ("ngïnx", "repository"),
            ("a/" + "b" * 250, "over 255"),
        ],
    )
    def test_rejected_with_reason(self, text: str, why: str) -> None:
        """The message names the rule the reference breaks."""
        with pytest.raises(InvalidReference, match="invalid image reference") as caught:
            parse_reference(text)
        assert why in str(caught.value)

    def test_error_is_a_registry_error(self) -> None:
        """InvalidReference belongs to the registry client's tree and is not temporary."""
        with pytest.raises(RegistryError) as caught:
            parse_reference("UPPER")
        assert not caught.value.temporary

    def test_long_input_is_truncated_in_the_message(self) -> None:
        """A huge input is not echoed whole into the error message."""
        with pytest.raises(InvalidReference) as caught:
            parse_reference("A" * 10_000)
        assert len(str(caught.value)) < 300


class TestHelpers:
    """check_repository, check_digest and is_digest, used by the client for URL parts."""

    def test_check_repository(self) -> None:
        """A valid path comes back; a traversal or uppercase path is refused."""
        assert check_repository("team/app") == "team/app"
        for bad in ("../etc", "team/../x", "team/App", "team/app?x=1", "/team"):
            with pytest.raises(InvalidReference):
                check_repository(bad)

    def test_digests(self) -> None:
        """Only sha256/sha512 with the right length of lowercase hex are digests."""
        assert check_digest(SHA) == SHA
        assert is_digest(SHA)
        assert is_digest(SHA512)
        assert not is_digest("latest")
        assert not is_digest("sha256:abc")
        assert not is_digest("v1:2")


class TestProperties:
    """Generated from the grammar, or arbitrary text: parse, normalise, round-trip."""

    @given(valid_references())
    def test_valid_references_parse_to_their_normal_form(self, case: tuple[str, Reference]) -> None:
        """Every reference the grammar allows parses to the normalised Reference."""
        text, expected = case
        assert parse_reference(text) == expected

    @given(valid_references())
    def test_canonical_string_round_trips(self, case: tuple[str, Reference]) -> None:
        """parse(str(ref)) == ref, and the canonical string is a fixed point."""
        ref = parse_reference(case[0])
        assert parse_reference(str(ref)) == ref
        assert str(parse_reference(str(ref))) == str(ref)

    @given(valid_references(), st.data())
    def test_uppercase_repository_is_refused(
        self, case: tuple[str, Reference], data: st.DataObject
    ) -> None:
        """Uppercasing any letter of the repository path gives the lowercase error."""
        ref = parse_reference(case[0])
        letters = [i for i, ch in enumerate(ref.path) if ch.isalpha()]
        assume(letters)
        at = data.draw(st.sampled_from(letters))
        path = ref.path[:at] + ref.path[at].upper() + ref.path[at + 1 :]
        with pytest.raises(InvalidReference, match="repository names must be lowercase"):
            parse_reference(f"{ref.domain}/{path}:{ref.tag or 'latest'}")

    @given(st.text() | st.text("abcAB019:/@._-[]", max_size=40))
    def test_arbitrary_text_parses_or_raises_invalid_reference(self, text: str) -> None:
        """Junk raises InvalidReference and nothing else; whatever parses round-trips."""
        try:
            ref = parse_reference(text)
        except InvalidReference:
            return
        assert parse_reference(str(ref)) == ref

    @given(valid_references(), st.sampled_from(["!", " ", "\n", "é", "$", "@@", "::"]), st.data())
    def test_foreign_characters_are_refused(
        self, case: tuple[str, Reference], junk: str, data: st.DataObject
    ) -> None:
        """A character outside the grammar anywhere in the repository makes it invalid."""
        ref = parse_reference(case[0])
        at = data.draw(st.integers(0, len(ref.path)))
        with pytest.raises(InvalidReference):
            parse_reference(f"{ref.domain}/{ref.path[:at]}{junk}{ref.path[at:]}")
