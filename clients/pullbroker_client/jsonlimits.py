"""JSON from strangers, with its nesting bounded before it is parsed.

`json.loads` recurses once per level of nesting, so a few KiB of `[[[[…` from a registry, an
image config or a socket peer end in RecursionError (a traceback, not a message) or in code
further on that walks the document recursively. Every document this project reads is
shallow (an OCI index is 4 levels, an image config under 10, a socket frame 2), so anything
deeper than `max_depth` is refused before the parser sees it.

Standard library only: the node's credential helpers import this on the path of every pull.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MAX_DEPTH = 64

# A JSON string (escapes included) or one bracket. Skipping strings whole keeps brackets
# inside them from counting; where this tokeniser and the parser could disagree (a string
# broken by a raw control character) the parser fails at that point anyway, before any
# deeper level is reached.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    """The document nests deeper than allowed (a ValueError, as json's own errors are)."""


def check_depth(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise JSONTooDeep when `data` opens more than `max_depth` arrays/objects at once."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return  # cannot be too deep: the common, small case costs two C scans
    depth = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
        elif token in (b"]", b"}"):
            depth -= 1


def loads_bounded(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """`json.loads(data)` for untrusted input; ValueError (JSONTooDeep, JSONDecodeError) only.

    Numbers too long for int() (Python's digit limit) are ValueError too, so callers catch
    exactly one class.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    check_depth(raw, max_depth)
    try:
        return json.loads(raw)
    except RecursionError as exc:  # only when max_depth is above the interpreter's limit
        raise JSONTooDeep("JSON nested too deeply") from exc
