"""Rendering broker responses as text tables or JSON. Credentials are never in a response."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import json_format
from pullbroker.v1 import registry_pb2

from pullbroker_client.cli_flags import as_flags

_TYPE_PREFIX = "REGISTRY_TYPE_"
_OUTCOME_PREFIX = "CONNECTION_OUTCOME_"


def to_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data, snake_case field names, defaults included."""
    data: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return data


def dumps(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def type_label(value: int) -> str:
    name: str = registry_pb2.RegistryType.Name(cast(Any, value))
    return name.removeprefix(_TYPE_PREFIX).lower()


def outcome_label(value: int) -> str:
    name: str = registry_pb2.ConnectionOutcome.Name(cast(Any, value))
    return name.removeprefix(_OUTCOME_PREFIX).lower()


def registry_id(registry: Any) -> str:
    return str(registry.name).removeprefix("registries/")


def _time(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return str(ts.ToJsonString())


def registry_details(registry: Any) -> str:
    """`key: value` lines for one registry."""
    rows = [
        ("id", registry_id(registry)),
        ("name", registry.name),
        ("display name", registry.display_name),
        ("type", type_label(registry.type)),
        ("url", registry.url),
        ("host", registry.host),
        ("repositories", ", ".join(registry.repositories) or "every repository of the host"),
        ("username", registry.username),
        ("region", registry.region),
        ("registry CA", "set" if registry.registry_ca_pem else "system trust"),
        ("basic pass-through", "allowed" if registry.allow_basic_passthrough else "refused"),
        ("credential version", str(registry.credential_version)),
        ("creator", registry.creator),
        ("created", _time(registry.create_time)),
        ("updated", _time(registry.update_time)),
        ("etag", registry.etag),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows if v != "")


def registry_table(registries: Sequence[Any]) -> str:
    """One line per registry under a header; a note when there are none."""
    if not registries:
        return "no registries: add one with `pullbroker registry add`"
    header = ("ID", "DISPLAY NAME", "TYPE", "HOST", "USERNAME", "VERSION", "UPDATED")
    rows = [header] + [
        (
            registry_id(r),
            r.display_name,
            type_label(r.type),
            r.host,
            r.username,
            str(r.credential_version),
            _time(r.update_time),
        )
        for r in registries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def test_result_text(name: str, result: Any) -> str:
    """One line: the outcome, how it authenticated and how long it took, then why."""
    latency_ms = result.latency.ToNanoseconds() / 1e6
    line = (
        f"{name}: {outcome_label(result.outcome)} "
        f"(auth {result.auth_scheme or 'unknown'}, {latency_ms:.0f} ms)"
    )
    why = " ".join(as_flags(result.message).split())
    return f"{line}: {why}" if why else line
