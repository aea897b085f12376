"""Repository globs on registry records: several records per host, told apart without a name.

A record's `repositories` (globs of domain/globs.py: `acme/*`, `acme/**`) say which
repositories of its host it serves; none means every repository. For an image that names no
record, the broker takes the records of the image's host whose globs match the repository and
picks the most specific match:

- a matching glob beats no globs at all (the host-wide catch-all);
- between globs, more literal characters win (`acme/team/*` over `acme/**`, `acme/app` over
  `acme/*`); with as many literal characters, fewer `**` and then fewer `*`/`?` win
  (`acme/*` over `acme/**`).

Two records whose best matches tie are ambiguous. Create and update refuse a record that
would make any repository ambiguous that way (`conflicts`), so selection only meets a tie in
records written before globs existed; then the request must name the record, as before.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.globs import Glob, GlobError, translate

MAX_GLOBS = 64
# Repository names are lowercase path components (the Docker reference grammar) plus glob
# wildcards; anything else could never match a repository.
_GLOB_TEXT = re.compile(r"^[a-z0-9._*?/-]+$")

Specificity = tuple[int, int, int, int]
"""Comparable: larger is more specific. (has globs, literal chars, -`**`, -`*`/`?`)."""
CATCH_ALL: Specificity = (0, 0, 0, 0)


class HasRepositories(Protocol):
    """A record as far as selection looks at it (a RegistryRecord fits)."""

    @property
    def display_name(self) -> str: ...

    @property
    def repositories(self) -> tuple[str, ...]: ...


def validate_repository_globs(globs: Iterable[str]) -> tuple[str, ...]:
    """The record's globs, trimmed, de-duplicated and in the order given; InvalidRegistry
    names the bad one and what a good one looks like."""
    out: list[str] = []
    for raw in globs:
        pattern = raw.strip()
        if not pattern:
            raise InvalidRegistry("repositories holds an empty glob: e.g. acme/* or acme/**")
        if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
            raise InvalidRegistry(
                f"repositories glob {pattern!r} has an empty path segment: e.g. acme/*"
            )
        if not _GLOB_TEXT.match(pattern):
            raise InvalidRegistry(
                f"repositories glob {pattern!r} can never match a repository: use lowercase "
                "path components and the wildcards * (one segment) and ** (any), without the "
                "host, e.g. acme/*"
            )
        try:
            Glob(pattern)
        except GlobError as exc:
            raise InvalidRegistry(f"repositories glob {exc}") from exc
        if pattern not in out:
            out.append(pattern)
    if len(out) > MAX_GLOBS:
        raise InvalidRegistry(f"repositories holds {len(out)} globs: at most {MAX_GLOBS}")
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Glob:
    """One Glob per pattern: every IssuePullToken matches its host's records' globs, and a
    Glob's regex is built once, not on every call (records are few; their globs repeat)."""
    return Glob(pattern)


@functools.lru_cache(maxsize=4096)
def specificity(pattern: str) -> Specificity:
    """How specific a glob is (see the module docstring); larger wins."""
    double = pattern.count("**")
    single = pattern.count("*") - 2 * double + pattern.count("?")
    literal = len(pattern) - pattern.count("*") - pattern.count("?")
    return (1, literal, -double, -single)


def best_match(globs: Sequence[str], repository: str) -> tuple[Specificity, str] | None:
    """The most specific of `globs` matching `repository` and its specificity; a record
    without globs matches everything as the catch-all; None: no glob matches."""
    if not globs:
        return CATCH_ALL, ""
    matching = [(specificity(g), g) for g in globs if _compiled(g).matches(repository)]
    return max(matching) if matching else None


R = TypeVar("R", bound=HasRepositories)


@dataclass(frozen=True)
class Selection(Generic[R]):
    """The records of a host for one repository: `chosen`, or the tied best ones."""

    chosen: R | None
    tied: tuple[R, ...] = ()


def select(records: Sequence[R], repository: str) -> Selection[R]:
    """The record whose globs match `repository` most specifically; `tied` lists the records
    sharing the best match when there is no single one (empty with `chosen` None: no record's
    globs match)."""
    scored = [(m[0], r) for r in records if (m := best_match(r.repositories, repository))]
    if not scored:
        return Selection(None)
    top = max(score for score, _ in scored)
    best = tuple(r for score, r in scored if score == top)
    return Selection(best[0]) if len(best) == 1 else Selection(None, best)


@dataclass(frozen=True)
class Conflict:
    """A glob of the new record and one of `other` that tie on some repository."""

    other: str
    glob: str
    other_glob: str
    example: str


def conflicts(globs: Sequence[str], others: Iterable[HasRepositories]) -> list[Conflict]:
    """Where a record with `globs` would tie with one of `others` (same host) for some
    repository: two globs of equal specificity that can both match one repository, or both
    records without globs."""
    found = []
    mine = list(globs) or [""]
    for other in others:
        theirs = list(other.repositories) or [""]
        for a in mine:
            for b in theirs:
                if _spec(a) != _spec(b):
                    continue
                example = common_repository(a or "**", b or "**")
                if example is not None:
                    found.append(Conflict(other.display_name, a, b, example))
                    break
            else:
                continue
            break
    return found


def _spec(pattern: str) -> Specificity:
    return specificity(pattern) if pattern else CATCH_ALL


# --- glob languages as small automata -------------------------------------------------
# A glob is a sequence of steps over characters: a literal, `?`/`*` (any character but '/'),
# `**` (any character); `**/` may also match nothing. Two globs share a repository when their
# product automaton reaches both ends; a witness is built on the way.

_ANY = "\x00any"
_NOSLASH = "\x00noslash"


@dataclass(frozen=True)
class _Step:
    cls: str  # a literal character, _ANY or _NOSLASH
    repeat: bool  # zero or more (for * and **), else exactly one


def _steps(pattern: str) -> list[tuple[_Step, ...]]:
    """Alternatives per position: `**/` is either nothing or (any)*'/'."""
    out: list[tuple[_Step, ...]] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append((_Step(_ANY, True), _Step("/", False)))
            out.append(())  # marker: the previous two steps may be skipped together
            i += 3
        elif pattern.startswith("**", i):
            out.append((_Step(_ANY, True),))
            i += 2
        elif pattern[i] == "*":
            out.append((_Step(_NOSLASH, True),))
            i += 1
        elif pattern[i] == "?":
            out.append((_Step(_NOSLASH, False),))
            i += 1
        else:
            out.append((_Step(pattern[i], False),))
            i += 1
    return out


def _nfa(pattern: str) -> tuple[list[_Step], dict[int, set[int]]]:
    """Linear steps and epsilon edges: state i is "before step i"; len(steps) accepts."""
    steps: list[_Step] = []
    eps: dict[int, set[int]] = {}
    for group in _steps(pattern):
        if not group:  # `**/`: from before its two steps, skip to after them
            start = len(steps) - 2
            eps.setdefault(start, set()).add(len(steps))
            continue
        steps.extend(group)
    for i, step in enumerate(steps):
        if step.repeat:
            eps.setdefault(i, set()).add(i + 1)
    return steps, eps


def _closure(states: set[int], eps: dict[int, set[int]]) -> frozenset[int]:
    todo = list(states)
    seen = set(states)
    while todo:
        for nxt in eps.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def _nonempty_segments(pattern: str) -> str:
    """The pattern with a segment that is only `*` (or a final `**`) made to match at least
    one character: repository path segments are never empty."""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "*" or (part == "**" and i == len(parts) - 1):
            parts[i] = "?" + part
    return "/".join(parts)


def _meet(a: str, b: str) -> str | None:
    """A character both classes accept, or None."""
    if a not in (_ANY, _NOSLASH):
        return a if _accepts(b, a) else None
    if b not in (_ANY, _NOSLASH):
        return b if _accepts(a, b) else None
    return "x"


def _accepts(cls: str, char: str) -> bool:
    return cls in (_ANY, char) or (cls == _NOSLASH and char != "/")


def common_repository(a: str, b: str) -> str | None:
    """A repository both globs match, or None when they share none."""
    sa, ea = _nfa(_nonempty_segments(a))
    sb, eb = _nfa(_nonempty_segments(b))
    start = (_closure({0}, ea), _closure({0}, eb))
    queue: list[tuple[frozenset[int], frozenset[int], str]] = [(*start, "")]
    seen = {start}
    while queue:
        xs, ys, text = queue.pop(0)
        if len(sa) in xs and len(sb) in ys and text:
            return text
        moves: dict[str, tuple[set[int], set[int]]] = {}
        for x in xs:
            if x >= len(sa):
                continue
            for y in ys:
                if y >= len(sb):
                    continue
                char = _meet(sa[x].cls, sb[y].cls)
                if char is None:
                    continue
                nx = x if sa[x].repeat else x + 1
                ny = y if sb[y].repeat else y + 1
                got = moves.setdefault(char, (set(), set()))
                got[0].add(nx)
                got[1].add(ny)
        for char, (nxs, nys) in moves.items():
            state = (_closure(nxs, ea), _closure(nys, eb))
            if state not in seen:
                seen.add(state)
                queue.append((*state, text + char))
    return None


def narrower(a: str, b: str) -> str | None:
    """Of two globs, one whose repositories the other also matches (a sufficient check:
    the other glob matches its text with wildcards standing for themselves); None when
    neither is found inside the other."""
    if _covers(a, b):
        return b
    if _covers(b, a):
        return a
    return None


def _covers(outer: str, inner: str) -> bool:
    """Whether every repository `inner` matches is matched by `outer` (sound, not complete)."""
    # Encode inner's wildcards as characters outer's wildcards may only stand for when they
    # are at least as wide: \x01 for `**`, \x02 for `*`, \x03 for `?`.
    encoded = inner.replace("**", "\x01").replace("*", "\x02").replace("?", "\x03")
    regex = translate(outer, star="[^/\x01]*", one="[^/\x01\x02]")
    return re.fullmatch(regex, encoded, re.DOTALL) is not None
