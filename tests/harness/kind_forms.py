"""Filling a registry kind's form from the kind catalogue alone, as a platform's UI would.

Non-secret fields take the catalogue's example values; secret fields, which the catalogue
never gives an example for, are made here per credential type (a password, or a real
service-account key that signs). Works on the domain's `FieldSpec`s and on the
ListRegistryKinds messages alike: both name `name`, `required`, `secret` and `example`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def service_account_key() -> str:
    """A service-account key file that passes the broker's checks (RSA 2048, Google's
    token endpoint)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "acme",
            "private_key_id": "0123abcd",
            "private_key": pem,
            "client_email": "puller@acme.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def secret_for(credential_type: str, field: str, key_json: str = "") -> str:
    """A value for a secret field of `credential_type` (the Credential oneof name)."""
    if credential_type == "google" and field == "key_json":
        return key_json or service_account_key()
    return f"not-a-real-{field.replace('_', '-')}"


def required_values(fields: Iterable[Any]) -> dict[str, str]:
    """Example values of the required fields; of a `required_unless` pair, the first one."""
    values: dict[str, str] = {}
    for field in fields:
        if field.required or (field.required_unless and field.required_unless not in values):
            values[field.name] = field.example
    return values


def credential_values(
    credential_type: str, fields: Iterable[Any], secrets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every required field of a credential type: examples, and secrets made per type (or
    taken from `secrets`)."""
    chosen = dict(secrets or {})
    values: dict[str, str] = {}
    for field in fields:
        if not field.required:
            continue
        if field.name in chosen:
            values[field.name] = chosen[field.name]
        elif field.secret:
            values[field.name] = secret_for(credential_type, field.name)
        else:
            values[field.name] = field.example
    return values
