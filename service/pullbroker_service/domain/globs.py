"""Path-aware globs for policy rules: `*` and `?` stay within one `/` segment, `**` crosses.

`team/*` matches `team/app` but not `team/a/b`; `team/**` matches both; `**/app` matches
`app` and `x/y/app`. Matching is case-sensitive and anchored at both ends. Character classes
(`[...]`) are refused rather than half-supported, so a rule never means something unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class GlobError(ValueError):
    """A pattern this glob dialect does not accept."""


def translate(pattern: str, *, star: str = "[^/]*", one: str = "[^/]") -> str:
    """`pattern` as a regex body; `star` and `one` are what `*` and `?` become (a caller
    comparing two globs narrows them, see repository_globs.py)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(star)
            i += 1
        elif pattern[i] == "?":
            out.append(one)
            i += 1
        elif pattern[i] in "[]":
            raise GlobError(f"pattern {pattern!r}: character classes ([...]) are not supported")
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Glob:
    """A compiled pattern; `Glob("team/*").matches("team/app")`."""

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern:
            raise GlobError("empty pattern: use '*' to match everything in one segment")
        object.__setattr__(self, "_regex", re.compile(translate(self.pattern), re.DOTALL))

    def matches(self, text: str) -> bool:
        return self._regex.fullmatch(text) is not None
