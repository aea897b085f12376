"""`pullbroker registry kinds [KIND]`: the broker's kind catalogue, as a table or in detail."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pullbroker_client.cli import output
from pullbroker_client.cli.common import UsageError, client_for, wants_json


def cmd_kinds(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        kinds = list(client.list_registry_kinds().kinds)
    wanted = (args.kind or "").strip().lower().replace("-", "_")
    if wanted:
        kinds = [k for k in kinds if k.kind == wanted]
        if not kinds:
            raise UsageError(
                f"unknown registry kind {args.kind!r}: see `pullbroker registry kinds`"
            )
    if wants_json(args):
        print(output.dumps({"kinds": [output.to_dict(k) for k in kinds]}))
    elif wanted:
        print(kind_details(kinds[0]))
    else:
        print(kinds_table(kinds))
    return 0


def kinds_table(kinds: Sequence[Any]) -> str:
    """One line per kind: its required fields (`a|b`: one of them) and credential types
    (`*`: secret)."""
    header = ("KIND", "NAME", "DEFAULT URL", "REQUIRED", "CREDENTIAL")
    rows = [header] + [
        (
            k.kind,
            k.display_name,
            k.default_url or "-",
            _required(k.fields) or "-",
            " or ".join(_credential(c) for c in k.credential_types) or "none",
        )
        for k in kinds
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def kind_details(kind: Any) -> str:
    """Every field of one kind, with what it is for."""
    lines = [f"{kind.kind}: {kind.display_name}"]
    if kind.description:
        lines.append(f"  {kind.description}")
    lines.append("registry fields:")
    lines += [_field_line(f) for f in kind.fields]
    for credential in kind.credential_types:
        lines.append(f"credential {credential.type} ({credential.display_name}):")
        lines += [_field_line(f) for f in credential.fields]
    if not kind.credential_types:
        lines.append("credential: none (anonymous)")
    return "\n".join(lines)


def _field_line(field: Any) -> str:
    if field.required:
        need = "required"
    elif field.required_unless:
        need = f"required unless {field.required_unless}"
    else:
        need = "optional"
    extras = [need] + (["secret"] if field.secret else [])
    if field.default_value:
        extras.append(f"default {field.default_value}")
    elif field.example:
        extras.append(f"e.g. {field.example}")
    return f"  {field.name} ({', '.join(extras)}): {field.description}"


def _required(fields: Sequence[Any]) -> str:
    names: list[str] = []
    for field in fields:
        if field.name == "display_name":
            continue
        if field.required:
            names.append(field.name)
        elif field.required_unless and field.required_unless not in " ".join(names):
            names.append(f"{field.name}|{field.required_unless}")
    return ", ".join(names)


def _credential(credential: Any) -> str:
    fields = ", ".join(f.name + ("*" if f.secret else "") for f in credential.fields if f.required)
    return f"{credential.type} ({fields})"
