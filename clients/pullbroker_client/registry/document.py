"""The one JSON parser for what a registry serves: manifests, indexes and image configs.

Every registry document is parsed here, so one rule bounds them all: a document is a JSON
object nested at most `MAX_DEPTH` levels deep, and anything else is a
`RegistryProtocolError` naming the document, never a `RecursionError`, `ValueError` or
`UnicodeDecodeError` escaping from `json`. Real manifests nest 4 levels and image configs
5 or 6 (`config.Healthcheck.Test`); 64 leaves room for any annotation scheme and stays far
below the interpreter's recursion limit, so the bound is the same on every stack depth.
"""

from __future__ import annotations

import json
from typing import Any

from pullbroker_client.registry.errors import RegistryProtocolError

MAX_DEPTH = 64


def load_object(data: bytes, subject: str) -> dict[str, Any]:
    """`data` as a JSON object; RegistryProtocolError (one line, naming `subject`) if not."""
    try:
        document: Any = json.loads(data)
    except RecursionError:
        raise _too_deep(subject) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise RegistryProtocolError(f"{subject} is not valid JSON") from None
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"{subject} is not a JSON object")
    if _deeper_than(document, MAX_DEPTH):
        raise _too_deep(subject)
    return document


def _deeper_than(document: dict[str, Any], limit: int) -> bool:
    """True when containers nest more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _too_deep(subject: str) -> RegistryProtocolError:
    return RegistryProtocolError(f"{subject} nests deeper than {MAX_DEPTH} levels: refused")
