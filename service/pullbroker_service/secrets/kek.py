"""Key-encryption keys: who wraps the per-credential data keys of the local secret store.

`FileKeyWrapper` keeps a 32-byte KEK in a 0600 file (created atomically if missing) and wraps
data keys with AES-256-GCM, the context as associated data, so a wrapped key only unwraps for
the record it was made for. KMS and Vault transit wrappers implement the same Protocol.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pullbroker_service.domain.errors import BackendUnavailable, SecretCorrupted

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyWrapper(Protocol):
    """Makes and unwraps data keys. `name` identifies the KEK (stored beside each envelope)."""

    name: str

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """A fresh 32-byte data key and its wrapped form, bound to `context`."""
        ...

    async def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The data key inside `wrapped`; SecretCorrupted if it was not made for `context`."""
        ...


def context_aad(context: Mapping[str, str]) -> bytes:
    """A canonical byte form of a context, so the same mapping always gives the same AAD."""
    return _canonical(tuple(sorted(context.items())))


@functools.lru_cache(maxsize=4096)
def _canonical(items: tuple[tuple[str, str], ...]) -> bytes:
    # Every credential read needs its context's AAD; registries are few, so remember them.
    return json.dumps(dict(items), sort_keys=True, separators=(",", ":")).encode()


class FileKeyWrapper:
    """A KEK read from a 0600 file. Use `FileKeyWrapper.open(path)`."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEY_BYTES:
            raise ValueError("a KEK is 32 bytes")
        self._aead = AESGCM(kek)
        # A fingerprint, not the key: tells envelopes of different KEKs apart.
        self.name = "file:" + hashlib.sha256(b"pullbroker-kek-id\0" + kek).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"FileKeyWrapper(name={self.name!r})"

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> FileKeyWrapper:
        """Load the KEK at `path`, creating it (0600, atomically) when missing and allowed."""
        if not path.exists():
            if not create:
                raise BackendUnavailable(f"KEK file {path} does not exist", retry_after=None)
            _create_key_file(path)
        return cls(_read_key_file(path))

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        return data_key, nonce + self._aead.encrypt(nonce, data_key, context_aad(context))

    async def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, context_aad(context))
        except InvalidTag as exc:
            raise SecretCorrupted(
                f"a data key does not unwrap with KEK {self.name} for {dict(context)}: it was "
                "tampered with, copied from another record, or wrapped by another KEK"
            ) from exc


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = base64.b64encode(os.urandom(KEY_BYTES)) + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() never replaces: if another process created the file first, theirs wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _read_key_file(path: Path) -> bytes:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise BackendUnavailable(
            f"KEK file {path} is accessible to group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}`",
            retry_after=None,
        )
    try:
        kek = base64.b64decode(path.read_bytes().strip(), validate=True)
    except binascii.Error as exc:
        raise BackendUnavailable(f"KEK file {path} is not base64", retry_after=None) from exc
    if len(kek) != KEY_BYTES:
        raise BackendUnavailable(
            f"KEK file {path} must hold {KEY_BYTES} bytes (base64), it holds {len(kek)}",
            retry_after=None,
        )
    return kek
