"""Where the broker is and which certificate to present: from the home folder, or flags."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pullbroker_client.broker_errors import REQUEST_ID_KEY
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles


@dataclass(frozen=True)
class BrokerTarget:
    """Where the broker is and which certificate to present."""

    address: str
    tls: TlsFiles

    @classmethod
    def from_home(
        cls,
        home: Home,
        role: str,
        *,
        address: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> BrokerTarget:
        """The home folder's broker.json and tls/ files, each overridable."""
        tls = TlsFiles.from_home(home, role, ca=ca, cert=cert, key=key)
        return cls(address or home.read_address(), tls)


DEFAULT_TIMEOUT = 30.0
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def call_metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_KEY, request_id or uuid.uuid4().hex),)
