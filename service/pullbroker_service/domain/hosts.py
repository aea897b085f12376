"""Registry URLs and hosts: one canonical spelling, and refusal of hosts the broker must not dial.

A record's host is what image references must name (`host[:port]`, lowercase, no default port)
and its url is `https://host[:port]` with no path: the broker builds every request URL itself.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

from pullbroker_client.registry.addresses import (
    METADATA_ADDRESSES,
    DialPolicy,
    IPAddress,
    address_refusal,
)

from pullbroker_service.domain.errors import InvalidRegistry

__all__ = [
    "DOCKER_HUB_HOST",
    "METADATA_ADDRESSES",
    "DialPolicy",
    "IPAddress",
    "address_refusal",
    "canonical_image_host",
    "check_dialable",
    "expected_realm_hosts",
    "host_of_url",
    "normalize_registry_url",
    "refused",
]

DOCKER_HUB_HOST = "registry-1.docker.io"
"""Where Docker Hub answers the v2 API; `docker.io` is only the name image references use."""

_HOST_ALIASES = {"docker.io": DOCKER_HUB_HOST, "index.docker.io": DOCKER_HUB_HOST}

# The token realms the well-known registries name in their challenges. A registry at one of
# these hosts that names any other realm is refused: the credential goes only where the
# registry's operator sends it, not wherever an on-path answer or a DNS mix-up says.
_KNOWN_REALMS: dict[str, frozenset[str]] = {
    DOCKER_HUB_HOST: frozenset({"auth.docker.io"}),
    "ghcr.io": frozenset({"ghcr.io"}),
    "quay.io": frozenset({"quay.io"}),
}

# Cloud metadata endpoints by name; their addresses are link-local and refused below.
_FORBIDDEN_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})

# A last label that is all digits or 0x-hex makes resolvers read the name as IPv4 (inet_aton).
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def normalize_registry_url(url: str, field: str = "url") -> tuple[str, str]:
    """Return (url, host) for a registry base URL, or raise InvalidRegistry naming `field`.

    A bare `host[:port]` is read as https. `http://` is refused: the broker sends credentials.
    """
    text = url.strip()
    if not text:
        raise InvalidRegistry(f"{field} is required, e.g. https://registry.example.com")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() == "http":
        raise InvalidRegistry(
            f"{field} uses http: use https; registries with a private CA: pass --registry-ca"
        )
    if parts.scheme.lower() != "https":
        raise InvalidRegistry(f"{field} must be an https:// URL, not {parts.scheme}://")
    if parts.username is not None or parts.password is not None:
        # Never echo the URL: its user-info may be a password.
        raise InvalidRegistry(f"{field} must not contain a username or password: send a credential")
    if parts.query or parts.fragment:
        raise InvalidRegistry(f"{field} must be https://host[:port] without a query or fragment")
    if parts.path.rstrip("/") not in ("", "/v2"):
        raise InvalidRegistry(
            f"{field} must be https://host[:port] without a path (got path {parts.path!r})"
        )
    host = _host_of(parts, field)
    return f"https://{host}", host


def _host_of(parts: SplitResult, field: str) -> str:
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidRegistry(f"{field} has an invalid port: use a number from 1 to 65535") from exc
    name = (parts.hostname or "").lower()
    if not name:
        raise InvalidRegistry(f"{field} has no host, e.g. https://registry.example.com")
    name = _HOST_ALIASES.get(name, name)
    check_dialable(name, field)
    if port is not None and not 1 <= port <= 65535:
        raise InvalidRegistry(f"{field} has an invalid port: use a number from 1 to 65535")
    name = _compressed(name)
    shown = f"[{name}]" if ":" in name else name
    return shown if port in (None, 443) else f"{shown}:{port}"


def check_dialable(name: str, field: str, policy: DialPolicy | None = None) -> None:
    """Refuse a host the broker must never dial: metadata services, link-local, unspecified,
    multicast, and IPv4 addresses in disguise (`2852039166`, `0xa9fea9fe`).

    With a `policy`, loopback and private literal addresses are judged by it too; names are
    judged by the addresses they resolve to on every connection the broker opens (the
    registry client's dial guard, pullbroker_client.registry.dial).
    """
    try:
        address: IPAddress | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is None:
        if not _DNS_NAME.match(name):
            raise InvalidRegistry(f"{field} host {name!r} is not a valid host name")
        if name in _FORBIDDEN_NAMES:
            raise InvalidRegistry(f"{field} host {name} is a cloud metadata service: refused")
        if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
            # Resolvers read these as IPv4 addresses (inet_aton): 0x7f.1 is 127.0.0.1.
            raise InvalidRegistry(
                f"{field} host {name!r} is an IP address in a non-standard form: "
                "write it as a dotted quad or use a DNS name"
            )
        return
    reason = address_refusal(address, policy)
    if reason:
        raise refused(field, name, name, reason)


def refused(field: str, name: str, address: str, reason: str) -> InvalidRegistry:
    """The error for `field`'s host `name` refused because `address` (one of its addresses,
    or itself) `reason`, with the setting that would allow it when there is one."""
    shown = "" if address == name else f" resolves to {address}, which"
    return InvalidRegistry(f"{field} host {name}{shown} {reason}: refused{_advice(reason)}")


def _advice(reason: str) -> str:
    for kind, setting in (
        ("loopback", "allow_loopback_registries"),
        ("private", "allow_private_registries"),
    ):
        if kind in reason:
            return (
                f"; to allow it, start the broker with a config file holding `{setting}: true`"
                " (`pullbroker serve --config FILE`, or `make run CONFIG=FILE`)"
            )
    return ""


def host_of_url(url: str) -> str:
    """The `host[:port]` of an already normalised registry url."""
    return normalize_registry_url(url)[1]


def canonical_image_host(host: str) -> str:
    """The record host an image reference's host must equal.

    Lowercase, no default https port, Docker Hub's names (`docker.io`, `index.docker.io`)
    as `registry-1.docker.io`: `docker.io/library/nginx` matches a Docker Hub record.
    """
    name = host.lower().removesuffix(":443")
    if name.startswith("["):
        literal, _, rest = name[1:].partition("]")
        name = f"[{_compressed(literal)}]{rest}"
    return _HOST_ALIASES.get(name, name)


def _compressed(name: str) -> str:
    """An IPv6 literal in its one shortest form (`2606:4700:0::1111` -> `2606:4700::1111`),
    so two spellings of one address are one host; anything else unchanged."""
    if ":" not in name:
        return name
    try:
        return ipaddress.IPv6Address(name).compressed
    except ValueError:
        return name


def expected_realm_hosts(registry_host: str) -> frozenset[str] | None:
    """The only hosts a well-known registry's token realm may be on; None when not pinned."""
    return _KNOWN_REALMS.get(registry_host)
