"""The one JSON parser for what a registry serves: manifests, indexes and image configs.

Every registry document is parsed here (nesting bounded by jsonlimits before json sees it),
so one rule bounds them all: a document is a JSON
object nested at most `MAX_DEPTH` levels deep, and anything else is a
`RegistryProtocolError` naming the document, never a `RecursionError`, `ValueError` or
`UnicodeDecodeError` escaping from `json`. Real manifests nest 4 levels and image configs
5 or 6 (`config.Healthcheck.Test`); 64 leaves room for any annotation scheme and stays far
below the interpreter's recursion limit, so the bound is the same on every stack depth.
"""

from __future__ import annotations

from typing import Any

from pullbroker_client.jsonlimits import JSONTooDeep, loads_bounded
from pullbroker_client.registry.errors import RegistryProtocolError

MAX_DEPTH = 64


def load_object(data: bytes, subject: str) -> dict[str, Any]:
    """`data` as a JSON object; RegistryProtocolError (one line, naming `subject`) if not."""
    try:
        document: Any = loads_bounded(data, MAX_DEPTH)
    except JSONTooDeep:
        raise RegistryProtocolError(
            f"{subject} nests deeper than {MAX_DEPTH} levels: refused"
        ) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise RegistryProtocolError(f"{subject} is not valid JSON") from None
    if not isinstance(document, dict):
        raise RegistryProtocolError(f"{subject} is not a JSON object")
    return document
