"""Who may do what in the test token server: Docker scopes, repository globs, a grants table."""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

# A grants value: repository glob -> actions ("pull", "push", "delete", "*").
Grants = Mapping[str, Iterable[str]]


@dataclass(frozen=True)
class Scope:
    """One requested resource scope, e.g. `repository:team/app:pull,push`."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        """Parse `type:name:actions`; names may hold colons (host:port): split at both ends."""
        first, last = text.find(":"), text.rfind(":")
        if first <= 0 or last == first:
            return None
        actions = tuple(a for a in text[last + 1 :].split(",") if a)
        return cls(text[:first], text[first + 1 : last], actions)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    # Same semantics as policy.yaml: "*" stays within one path segment, "**" crosses them.
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    table = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + r"\Z")


def glob_match(pattern: str, name: str) -> bool:
    """True when repository `name` matches `pattern` (`*` one segment, `**` any depth)."""
    return _glob_regex(pattern).match(name) is not None


@dataclass
class _User:
    password: str
    grants: dict[str, frozenset[str]]
    generation: int = 0


@dataclass
class GrantsTable:
    """Users, their passwords and repository grants; anonymous grants apply to everyone."""

    _users: dict[str, _User] = field(default_factory=dict)
    _anonymous: dict[str, frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, name: str, password: str, grants: Grants) -> None:
        """Create or replace a user."""
        with self._lock:
            old = self._users.get(name)
            generation = old.generation + 1 if old else 0
            self._users[name] = _User(password, _freeze(grants), generation)

    def remove_user(self, name: str) -> None:
        """Delete a user: its password and refresh tokens stop working."""
        with self._lock:
            self._users.pop(name, None)

    def set_password(self, name: str, password: str) -> None:
        """Rotate a user's password; refresh tokens issued before stop working."""
        with self._lock:
            user = self._users[name]
            user.password = password
            user.generation += 1

    def set_grants(self, name: str, grants: Grants) -> None:
        """Replace a user's grants (takes effect for the next token)."""
        with self._lock:
            self._users[name].grants = _freeze(grants)

    def set_anonymous_grants(self, grants: Grants) -> None:
        """Replace what anonymous callers (and every user) may do."""
        with self._lock:
            self._anonymous = _freeze(grants)

    def check_password(self, name: str, password: str) -> bool:
        """True when the user exists and the password matches."""
        with self._lock:
            user = self._users.get(name)
            return user is not None and _same(user.password, password)

    def generation(self, name: str) -> int | None:
        """The user's credential generation (bumped on rotation), None if unknown."""
        with self._lock:
            user = self._users.get(name)
            return None if user is None else user.generation

    def usernames(self) -> list[str]:
        """Every known user name."""
        with self._lock:
            return sorted(self._users)

    def allowed(self, user: str | None, scope: Scope) -> tuple[str, ...]:
        """The requested actions this caller may perform; the rest are dropped silently."""
        if scope.type != "repository":
            return ()
        with self._lock:
            tables = [self._anonymous]
            if user is not None and user in self._users:
                tables.append(self._users[user].grants)
            granted: set[str] = set()
            for table in tables:
                for pattern, actions in table.items():
                    if glob_match(pattern, scope.name):
                        granted |= actions
        if "*" in granted:
            return scope.actions
        return tuple(a for a in scope.actions if a in granted)


def _freeze(grants: Grants) -> dict[str, frozenset[str]]:
    return {pattern: frozenset(actions) for pattern, actions in grants.items()}


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
