"""What both use cases need: resolving a registry name, reading its credential, new ids."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

from pullbroker_service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    SecretCorrupted,
)
from pullbroker_service.domain.model import (
    Credential,
    RecordState,
    RegistryRecord,
    credential_from_bytes,
)
from pullbroker_service.domain.secret_forms import credential_forms
from pullbroker_service.infra.logging import register_secret_values
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.store.base import MetadataStore

RESOURCE_PREFIX = "registries/"


def utc_now() -> datetime:
    return datetime.now(UTC)


class _MonotonicIds:
    """Milliseconds plus 40 random bits, like a ULID; within one millisecond the random part
    counts up from the previous id's, so ids made in this process sort in creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (0, 0)

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            last_ms, last_random = self._last
            if ms <= last_ms and last_random < _RANDOM_MAX:
                ms, random = last_ms, last_random + 1
            else:
                random = int.from_bytes(os.urandom(5), "big") >> 1  # room to count up
            self._last = (ms, random)
        return f"{ms:011x}{random:010x}"


_RANDOM_MAX = (1 << 40) - 1
new_registry_id = _MonotonicIds()
"""Time-ordered (so lists come out in creation order) plus 40 random bits."""


def new_etag() -> str:
    return os.urandom(8).hex()


async def resolve(store: MetadataStore, name: str) -> RegistryRecord:
    """The record named "registries/<id>" or by its display name; RegistryNotFound if none."""
    if not name:
        raise InvalidArgument("a registry name is required: registries/<id> or a display name")
    if name.startswith(RESOURCE_PREFIX):
        return await store.get(name.removeprefix(RESOURCE_PREFIX))
    return await store.get_by_display_name(name)


def require_ready(record: RegistryRecord) -> RegistryRecord:
    if record.state is not RecordState.READY:
        raise FailedPrecondition(
            f"registry {record.display_name!r} is still being created: retry in a moment"
        )
    return record


async def load_credential(secrets: SecretBackend, record: RegistryRecord) -> Credential | None:
    """The record's current credential from the secret backend (None for anonymous kinds)."""
    if record.secret_ref is None:
        return None
    data = await secrets.get(record.secret_ref)
    try:
        credential = credential_from_bytes(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretCorrupted(
            f"the stored credential of registry {record.display_name!r} is not readable: "
            "rotate it (pullbroker registry update --credential ...)"
        ) from exc
    # The credential is plaintext in memory from here on: no log line, error or audit row may
    # carry it, nor any encoding of it an upstream could echo back (secret_forms.py).
    register_secret_values(credential_forms(credential))
    return credential
