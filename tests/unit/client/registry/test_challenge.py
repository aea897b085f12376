"""parse_www_authenticate: RFC 7235 challenges, by table and by property."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pullbroker_client.registry.challenge import (
    Challenge,
    format_challenges,
    parse_www_authenticate,
)
from pullbroker_client.registry.errors import InvalidChallenge

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_token = st.from_regex(_TOKEN, fullmatch=True)
_token68 = st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True)
_value_chars = st.one_of(
    st.sampled_from("\t "),
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    st.characters(min_codepoint=0x80, max_codepoint=0xFF),
)
_value = st.text(_value_chars, max_size=30)
_ows = st.sampled_from(["", " ", "  ", "\t"])


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, flips, strict=True))


def _render_value(draw: st.DrawFn, value: str) -> str:
    if _TOKEN.fullmatch(value) and draw(st.booleans()):
        return value
    # Any character may be sent as a quoted-pair; '"' and '\' must be.
    escape_all = draw(st.booleans())
    body = "".join("\\" + c if escape_all or c in '"\\' else c for c in value)
    return f'"{body}"'


@st.composite
def rendered_challenge(draw: st.DrawFn) -> tuple[str, Challenge]:
    """One challenge as a server might write it, and what it must parse to."""
    scheme = draw(_token)
    form = draw(st.sampled_from(["bare", "token68", "params"]))
    if form == "bare":
        return _random_case(draw, scheme), Challenge(scheme.lower())
    if form == "token68":
        value = draw(_token68)
        return f"{_random_case(draw, scheme)} {value}", Challenge(scheme.lower(), token68=value)
    names = draw(st.lists(_token, min_size=1, max_size=4, unique_by=str.lower))
    values = [draw(_value) for _ in names]
    pieces = []
    for name, value in zip(names, values, strict=True):
        bws = draw(_ows), draw(_ows)
        pieces.append(f"{_random_case(draw, name)}{bws[0]}={bws[1]}{_render_value(draw, value)}")
    joiner = draw(_ows) + "," + draw(_ows) + draw(st.sampled_from(["", ", ", ",,"]))
    params = dict(zip((n.lower() for n in names), values, strict=True))
    return f"{_random_case(draw, scheme)} {joiner.join(pieces)}", Challenge(scheme.lower(), params)


@st.composite
def rendered_header(draw: st.DrawFn) -> tuple[str, list[Challenge]]:
    """Several challenges in one header, with optional whitespace and empty list elements."""
    parts = draw(st.lists(rendered_challenge(), min_size=1, max_size=4))
    lead, trail = draw(st.sampled_from(["", " ", ", "])), draw(st.sampled_from(["", " ", " ,"]))
    joiner = draw(_ows) + "," + draw(_ows) + draw(st.sampled_from(["", ", "]))
    return lead + joiner.join(text for text, _ in parts) + trail, [c for _, c in parts]


class TestTable:
    """Headers seen in the wild and the RFC's edge cases."""

    def test_docker_bearer(self) -> None:
        """distribution's challenge: realm, service and a scope with commas inside quotes."""
        header = (
            'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
            'scope="repository:team/app:pull,push",error="insufficient_scope"'
        )
        [challenge] = parse_www_authenticate(header)
        assert challenge.scheme == "bearer"
        assert challenge.realm == "https://auth.example.com/token"
        assert challenge.service == "registry.example.com"
        assert challenge.scope == "repository:team/app:pull,push"
        assert challenge.error == "insufficient_scope"

    def test_several_challenges(self) -> None:
        """Basic and Bearer in one header, case-insensitive scheme and names, token values."""
        header = 'BASIC Realm="Registry Realm", bearer REALM="https://a/t" , Service = reg'
        assert parse_www_authenticate(header) == [
            Challenge("basic", {"realm": "Registry Realm"}),
            Challenge("bearer", {"realm": "https://a/t", "service": "reg"}),
        ]

    def test_escapes(self) -> None:
        """Backslash escapes in quoted strings are undone; other backslashes are literal pairs."""
        [challenge] = parse_www_authenticate(r'Bearer realm="a\"b\\c\d", x=""')
        assert challenge.params == {"realm": 'a"b\\cd', "x": ""}

    def test_token68_or_param(self) -> None:
        """`realm=` alone is a token68 (the grammar allows trailing '='); `realm=x` a param."""
        assert parse_www_authenticate("Bearer realm=") == [Challenge("bearer", token68="realm=")]
        assert parse_www_authenticate("Bearer realm=x") == [Challenge("bearer", {"realm": "x"})]

    def test_token68(self) -> None:
        """A token68 credential after the scheme, padding included, then another challenge."""
        assert parse_www_authenticate("Newauth YWxhZGRpbjpvcGVuIHNlc2FtZQ==, Negotiate") == [
            Challenge("newauth", token68="YWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Challenge("negotiate"),
        ]

    def test_empty_list_elements(self) -> None:
        """Leading, trailing and doubled commas are empty list elements, skipped."""
        assert parse_www_authenticate(' , Basic ,, , Bearer realm="r" ,') == [
            Challenge("basic"),
            Challenge("bearer", {"realm": "r"}),
        ]

    @pytest.mark.parametrize(
        "header",
        [
            "",
            " , ,",
            '"Bearer"',
            'Bearer realm="unterminated',
            "Bearer realm=a b",
            "Bearer realm=x,=y",
            "Bearer realm=x realm=y",
            "Bearer a=1, A=2",
            'Bearer="x"',
            "Bearer\trealm=x\x00",
            'Bearer realm="line\nbreak"',
            "Bearer realm=(x)",
            "Bé realm=x",
            "Newauth abc, x=y",
        ],
    )
    def test_junk_raises_invalid_challenge(self, header: str) -> None:
        """Malformed headers raise InvalidChallenge with a position, never another error."""
        with pytest.raises(InvalidChallenge, match="invalid WWW-Authenticate header"):
            parse_www_authenticate(header)

    def test_format_quotes_and_escapes(self) -> None:
        """format_challenges writes quoted-strings that parse back to the same values."""
        challenges = [Challenge("bearer", {"realm": 'he said "hi" \\o/'}), Challenge("basic")]
        header = format_challenges(challenges)
        assert header == 'bearer realm="he said \\"hi\\" \\\\o/", basic'
        assert parse_www_authenticate(header) == challenges


class TestProperties:
    """Generated from the grammar, or arbitrary text."""

    @given(rendered_header())
    def test_valid_headers_parse(self, case: tuple[str, list[Challenge]]) -> None:
        """Every header the grammar allows parses to its challenges."""
        header, expected = case
        assert parse_www_authenticate(header) == expected

    @given(rendered_header())
    def test_format_round_trips(self, case: tuple[str, list[Challenge]]) -> None:
        """parse(format(challenges)) == challenges."""
        challenges = parse_www_authenticate(case[0])
        assert parse_www_authenticate(format_challenges(challenges)) == challenges

    @given(st.text() | st.text(' \t,="\\aAbB=/+x', max_size=40))
    def test_arbitrary_text_parses_or_raises_invalid_challenge(self, header: str) -> None:
        """Junk raises InvalidChallenge and nothing else; whatever parses round-trips."""
        try:
            challenges = parse_www_authenticate(header)
        except InvalidChallenge:
            return
        assert challenges
        assert parse_www_authenticate(format_challenges(challenges)) == challenges

    @given(rendered_header(), st.data())
    def test_truncated_headers_never_raise_anything_else(
        self, case: tuple[str, list[Challenge]], data: st.DataObject
    ) -> None:
        """A valid header cut anywhere parses or raises InvalidChallenge, never another error."""
        header = case[0]
        cut = data.draw(st.integers(0, len(header)))
        try:
            challenges = parse_www_authenticate(header[:cut])
        except InvalidChallenge:
            return
        assert all(c.scheme == c.scheme.lower() for c in challenges)
