"""Canaries: unique, recognisable secret values, and searches for them in files and text.

A leak can hide in an encoded form, so the searches also look for base64 (at all three
alignments, as inside a Basic header or a JSON auth blob), URL-encoded, hex and JSON-escaped
forms.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

_PREFIX = "CANARY-"


def new_canary(label: str = "") -> str:
    """A fresh canary, e.g. `CANARY-alice-3f2c...`; unique per call."""
    middle = f"{label}-" if label else ""
    return f"{_PREFIX}{middle}{uuid.uuid4().hex}"


def _base64_forms(needle: bytes) -> set[bytes]:
    # Base64 of a secret embedded at offset 0, 1 or 2 of a larger string: take the encoding
    # of the secret shifted by k filler bytes and keep only the characters that do not
    # depend on the unknown neighbours.
    forms: set[bytes] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + needle)
        start = -(-4 * shift // 3)  # first output char made only of needle bits
        end = 4 * (shift + len(needle)) // 3  # one past the last such char
        stable = encoded[start:end]
        if len(stable) >= 16:
            forms.add(stable)
            forms.add(stable.replace(b"+", b"-").replace(b"/", b"_"))
    return forms


def encoded_forms(needle: str) -> set[bytes]:
    """Byte strings whose presence means the needle leaked (raw, base64, URL, hex, JSON)."""
    raw = needle.encode()
    forms = {raw, quote(needle, safe="").encode(), quote_plus(needle).encode()}
    forms.add(json.dumps(needle)[1:-1].encode())
    forms.add(needle.encode("utf-16-le"))
    forms |= {raw.hex().encode(), raw.hex().upper().encode()}
    forms |= _base64_forms(raw)
    return {f for f in forms if f}


def find_in_bytes(data: bytes, needle: str) -> bool:
    """True when any encoded form of the needle occurs in `data`."""
    return any(form in data for form in encoded_forms(needle))


def find_in_text(text: str, needle: str) -> bool:
    """True when any encoded form of the needle occurs in `text`."""
    return find_in_bytes(text.encode("utf-8", "surrogateescape"), needle)


def find_in_tree(root: Path, needle: str) -> list[Path]:
    """Every regular file under `root` (file names included) that holds the needle in any form."""
    forms = encoded_forms(needle)
    longest = max(len(f) for f in forms)
    hits: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            in_name = any(form in name.encode() for form in forms)
            is_file = name in filenames and not path.is_symlink()
            if in_name or (is_file and _file_holds(path, forms, longest)):
                hits.append(path)
    return sorted(set(hits))


def _file_holds(path: Path, forms: set[bytes], overlap: int) -> bool:
    # Streamed with an overlap so a needle split across two reads is still found.
    tail = b""
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                window = tail + chunk
                if any(form in window for form in forms):
                    return True
                tail = window[-overlap:]
    except OSError:
        return False
    return False
