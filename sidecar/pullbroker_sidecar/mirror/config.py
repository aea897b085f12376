"""The mirror's settings (from `pullbroker-sidecar run --mirror ...`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pullbroker_sidecar.errors import InvalidOption

GIB = 1 << 30
DEFAULT_STORE_MAX = 20 * GIB
DEFAULT_BROKER_WAIT = 8.0


@dataclass(frozen=True)
class MirrorConfig:
    """Where the mirror listens and whom it serves."""

    host: str
    """Address to bind: loopback unless `allow_remote`."""
    port: int
    """TCP port (0: the OS picks; the log line `mirror_started` says which)."""
    allow_remote: bool = False
    """Bind a non-loopback address and serve remote clients (not checked by uid)."""
    allowed_uids: frozenset[int] = frozenset({0})
    """Local users whose connections are served (containerd and dockerd run as root)."""
    store_max_size: int = DEFAULT_STORE_MAX
    """Bytes of blobs the node store keeps before the least recently used are removed."""
    serve_stale: float = 0.0
    """Seconds a tag's last known manifest may be served while the registry is unreachable
    (0: never; tags are resolved upstream on every request)."""
    broker_wait: float = DEFAULT_BROKER_WAIT
    """How long a request waits for the broker before answering 503 with Retry-After."""
    timeout: float = 30.0
    """Upstream registry connect and read timeout."""


def parse_listen(text: str, *, allow_remote: bool) -> tuple[str, int]:
    """`127.0.0.1:5000`, `[::1]:5000` -> (host, port); a non-loopback host needs
    `allow_remote`."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidOption(f"--mirror {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5005")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidOption(f"--mirror {text!r}: HOST must be an IP address") from None
    if not address.is_loopback and not allow_remote:
        raise InvalidOption(
            f"--mirror {text!r} is not a loopback address: the mirror pulls with this node's "
            "identity, so it serves the node only (add --mirror-allow-remote to override)"
        )
    return host, int(port)
