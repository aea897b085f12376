"""Every spelling of a long-lived secret that an upstream could echo back to us.

The log scrubber matches text, so it must know each form the secret travels in: a token
endpoint that quotes the `Authorization` header it received says `Basic base64(user:pw)`, an
OAuth endpoint that quotes its form body says the percent-encoded client secret, a JSON error
says the JSON-escaped value, and base64 of a larger blob (a docker config's `auth`, a whole key
file) holds the secret's base64 at one of three alignments. Registering all of them is what
lets a message built from an upstream body leave the broker clean.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    GoogleServiceAccount,
)

MIN_FRAGMENT = 16
"""Shortest base64 fragment registered: shorter runs of base64 would match unrelated text."""


def derived_forms(secret: str, username: str | None = None) -> set[str]:
    """`secret` as sent, encoded and echoed; with `username`, the `user:secret` pair too.

    Raw, percent-encoded (quote and quote_plus, escapes in either case), hex (either case),
    JSON-escaped, base64 (standard and urlsafe,
    with and without padding), `Basic <base64(user:secret)>`, and the base64 fragments that
    stay the same wherever the secret sits inside a larger base64 text.
    """
    if not secret:
        return set()
    texts = [secret] if username is None else [secret, f"{username}:{secret}"]
    forms: set[str] = set()
    for text in texts:
        forms |= _text_forms(text)
    if username is not None:
        pair = f"{username}:{secret}".encode()
        forms.add("Basic " + base64.b64encode(pair).decode("ascii"))
    # As itself, or JSON-escaped inside a larger blob (a docker config.json's auths) encoded whole.
    for text in {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}:
        forms |= _embedded_base64(text.encode())
    return {form for form in forms if form}


def credential_forms(credential: Credential | None) -> set[str]:
    """The derived forms of every secret a credential holds (see `derived_forms`)."""
    match credential:
        case BasicCredential(username=user, password=password):
            return derived_forms(password.reveal(), user)
        case AwsCredential(secret_access_key=secret):
            return derived_forms(secret.reveal())
        case AzureServicePrincipal(client_id=client_id, client_secret=secret):
            # client_secret_basic sends base64(client_id:client_secret) in a Basic header.
            return derived_forms(secret.reveal(), client_id)
        case GoogleServiceAccount(key_json=key_json):
            return derived_forms(key_json.reveal()) | _private_key_forms(key_json.reveal())
    return set()


def _text_forms(text: str) -> set[str]:
    raw = text.encode()
    std = base64.b64encode(raw).decode("ascii")
    url = base64.urlsafe_b64encode(raw).decode("ascii")
    percent = {quote(text, safe=""), quote(text), quote_plus(text)}
    return {
        text,
        *percent,
        # Percent-escapes are case-insensitive (RFC 3986): some servers echo them lower-case.
        *(_lower_escapes(form) for form in percent),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        std,
        std.rstrip("="),
        url,
        url.rstrip("="),
    }


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _embedded_base64(raw: bytes) -> set[str]:
    """The characters of base64(filler + raw + filler) that depend on `raw` alone, for each
    of the three alignments `raw` can have inside a larger encoded text."""
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-4 * shift // 3)
        end = 4 * (shift + len(raw)) // 3
        stable = encoded[start:end]
        if len(stable) >= MIN_FRAGMENT:
            forms.add(stable)
            forms.add(stable.replace("+", "-").replace("/", "_"))
    return forms


def _private_key_forms(key_json: str) -> set[str]:
    """A service-account key's PEM, its base64 body as one run and line by line."""
    try:
        document = json.loads(key_json)
    except (ValueError, RecursionError):
        return set()
    pem = document.get("private_key") if isinstance(document, dict) else None
    if not isinstance(pem, str) or not pem:
        return set()
    lines = [line.strip() for line in pem.splitlines()]
    body = [line for line in lines if line and not line.startswith("-----")]
    forms = _text_forms(pem) | _text_forms("".join(body))
    forms.update(line for line in body if len(line) >= MIN_FRAGMENT)
    return forms
