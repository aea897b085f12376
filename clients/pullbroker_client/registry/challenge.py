"""WWW-Authenticate headers (RFC 7235 section 4.1) parsed into challenges.

    WWW-Authenticate = 1#challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )
    token68          = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="

Several challenges may share one header, so after a comma a `token =` continues the current
challenge and a bare token starts the next one. Empty list elements (", ,") are allowed, as
RFC 7230 section 7 asks of recipients. Scheme and parameter names are case-insensitive and come
back lowercase; values keep their case. Anything else raises InvalidChallenge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pullbroker_client.registry.errors import InvalidChallenge

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OWS = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t,]*")
_QUOTED = re.compile(
    r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\t \x21-\x7e\x80-\U0010ffff])*)"'
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_ESCAPE = re.compile(r'(["\\])')
_SHOWN = 80


@dataclass(frozen=True)
class Challenge:
    """One challenge: `scheme` and parameter names lowercase; `token68` for schemes that use it."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")

    def __str__(self) -> str:
        if self.token68 is not None:
            return f"{self.scheme} {self.token68}"
        params = ",".join(f"{name}={quote(value)}" for name, value in self.params.items())
        return f"{self.scheme} {params}" if params else self.scheme


def quote(value: str) -> str:
    """`value` as an RFC 7230 quoted-string."""
    return '"' + _NEEDS_ESCAPE.sub(r"\\\1", value) + '"'


def format_challenges(challenges: list[Challenge]) -> str:
    """One header value holding every challenge (the inverse of parse_www_authenticate)."""
    return ", ".join(str(c) for c in challenges)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Every challenge in one WWW-Authenticate value; InvalidChallenge when it does not parse."""
    parser = _Parser(header)
    challenges = parser.challenges()
    if not challenges:
        raise parser.invalid("no challenge in the header")
    return challenges


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def challenges(self) -> list[Challenge]:
        found: list[Challenge] = []
        self.skip(_SEPARATORS)
        while self.pos < len(self.text):
            found.append(self.challenge())
            self.skip(_SEPARATORS)
        return found

    def challenge(self) -> Challenge:
        scheme = self.expect(_TOKEN, "an auth scheme").lower()
        gap = self.skip(_OWS)
        if self.at_end_of_element():
            return Challenge(scheme)
        if not gap:
            raise self.invalid(f"expected a space after the scheme {scheme!r}")
        token68 = self.token68()
        if token68 is not None:
            return Challenge(scheme, token68=token68)
        return Challenge(scheme, self.params())

    def token68(self) -> str | None:
        match = _TOKEN68.match(self.text, self.pos)
        if match is None:
            return None
        after = _OWS.match(self.text, match.end())
        assert after is not None  # _OWS matches the empty string
        end = after.end()
        if end < len(self.text) and self.text[end] != ",":
            return None
        self.pos = end
        return match.group()

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        while True:
            name = self.expect(_TOKEN, "a parameter name").lower()
            self.skip(_OWS)
            self.expect_char("=")
            self.skip(_OWS)
            if name in params:
                raise self.invalid(f"parameter {name!r} appears twice in one challenge")
            params[name] = self.value()
            self.skip(_OWS)
            if not self.at_end_of_element():
                raise self.invalid("expected ',' after a parameter")
            self.skip(_SEPARATORS)
            if not self.next_is_param():
                return params

    def value(self) -> str:
        quoted = _QUOTED.match(self.text, self.pos)
        if quoted is not None:
            self.pos = quoted.end()
            return _QUOTED_PAIR.sub(r"\1", quoted.group(1))
        return self.expect(_TOKEN, "a token or quoted string")

    def next_is_param(self) -> bool:
        name = _TOKEN.match(self.text, self.pos)
        if name is None:
            return False
        after = _OWS.match(self.text, name.end())
        assert after is not None  # _OWS matches the empty string
        return self.text.startswith("=", after.end())

    def at_end_of_element(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == ","

    def skip(self, pattern: re.Pattern[str]) -> bool:
        match = pattern.match(self.text, self.pos)
        assert match is not None  # every skipped pattern matches the empty string
        self.pos = match.end()
        return match.end() > match.start()

    def expect(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise self.invalid(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def expect_char(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise self.invalid(f"expected {char!r}")
        self.pos += 1

    def invalid(self, why: str) -> InvalidChallenge:
        shown = self.text if len(self.text) <= _SHOWN else self.text[: _SHOWN - 1] + "…"
        return InvalidChallenge(
            f"invalid WWW-Authenticate header {shown!r} at character {self.pos}: {why}"
        )
