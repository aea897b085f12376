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
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    """The document nests deeper than allowed (a ValueError, as json's own errors are)."""


def check_depth(text: str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise JSONTooDeep when `text` opens more than `max_depth` arrays/objects at once."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be too deep: the common, small case costs two C scans
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
        elif token in ("]", "}"):
            depth -= 1


def loads_bounded(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """`json.loads(data)` for untrusted input; ValueError (JSONTooDeep, JSONDecodeError,
    UnicodeDecodeError) only.

    Bytes must be UTF-8 (RFC 8259): json.loads would also guess UTF-16 and UTF-32, whose
    bytes the depth check would misread (a 0x22 inside U+4E22 is no quote). Numbers too long
    for int() (Python's digit limit) are ValueError too, so callers catch exactly one class.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError as exc:  # only when max_depth is above the interpreter's limit
        raise JSONTooDeep("JSON nested too deeply") from exc
