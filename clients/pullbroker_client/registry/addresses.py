"""Which addresses a registry client may dial: one pure judgement for the broker and the node.

No I/O here. The dialers (dial.py for sockets, guarded_backend.py for httpx) resolve a host
once, pass every answer through `checked_addresses`, and connect only to what it returned,
so the address judged is the address connected to (no DNS rebinding in between).

IPv6 can carry an IPv4 destination: IPv4-mapped ::ffff:a.b.c.d, IPv4-translated
::ffff:0:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and the local-use
64:ff9b:1::/48 (RFC 6052 layouts), 6to4 2002::/16 and Teredo 2001::/32. Such an address is
judged by the IPv4 address(es) it carries, the strictest answer winning: otherwise
`64:ff9b::a9fe:a9fe` would be a public address that reaches 169.254.169.254 through a NAT64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pullbroker_client.registry.errors import DialRefused

__all__ = [
    "BASELINE",
    "METADATA_ADDRESSES",
    "DialPolicy",
    "IPAddress",
    "address_refusal",
    "checked_addresses",
    "embedded_ipv4",
    "parse_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6 (a ULA, not link-local)
        "100.100.100.200",  # Alibaba Cloud instance metadata (shared address space)
    )
)
"""Addresses refused whatever the policy: they hand out the host's own cloud credentials."""


@dataclass(frozen=True)
class DialPolicy:
    """Which address ranges a client may dial. Link-local, metadata, unspecified and
    multicast addresses are refused whatever this says; the defaults refuse loopback and
    private addresses too (the broker's SSRF defence)."""

    allow_loopback: bool = False
    """Allow 127.0.0.0/8 and ::1 (a registry on the same host; tests)."""

    allow_private: bool = False
    """Allow private and reserved ranges (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10,
    ...): registries on the internal network."""


BASELINE = DialPolicy(allow_loopback=True, allow_private=True)
"""Refuses only what no registry client may ever dial (link-local, metadata, unspecified,
multicast). The node's policy: its registries are often on loopback or a private network."""

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # Linux dials 0.x.x.x as the host itself
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated, still routed internally
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
# RFC 6052 section 2.2: where the 32 IPv4 bits sit for each NAT64 prefix length a
# 64:ff9b:1::/48 deployment may use (bits 64-71 are the reserved "u" octet, skipped).
_RFC6052_SLICES = ((slice(6, 8), slice(9, 11)), (slice(7, 8), slice(9, 12)), (slice(9, 13),))


def parse_address(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv6 zone id and brackets dropped), None for a name."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 `address` may deliver to; () when it carries none."""
    if isinstance(address, ipaddress.IPv4Address):
        return ()
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in _IPV4_TRANSLATED or address in _NAT64_WELL_KNOWN:
        return (low32,)
    if address in _IPV4_COMPATIBLE:
        return (low32,) if int(address) > 1 else ()  # :: and ::1 are themselves
    if address in _NAT64_LOCAL:
        packed = address.packed
        layouts = [b"".join(packed[part] for part in parts) for parts in _RFC6052_SLICES]
        carried = [*map(ipaddress.IPv4Address, layouts), low32]
        # The layouts a deployment does not use read as zeros there: 0/8 is never a target.
        return tuple(dict.fromkeys(a for a in carried if a not in _THIS_NETWORK))
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        server, client = address.teredo  # the client is stored XOR 0xffffffff; decoded here
        return (client, server)
    return ()


def address_refusal(address: IPAddress, policy: DialPolicy | None) -> str:
    """Why `address` must not be dialled under `policy` ("" if it may).

    Without a policy only the always-refused ranges count (link-local, metadata, unspecified,
    multicast). An IPv6 address carrying IPv4 is judged by what it carries.
    """
    carried = embedded_ipv4(address)
    if not carried:
        return _refusal(address, policy)
    # The prefix is a translation mechanism, not a destination: what it carries decides.
    for inner in carried:
        reason = _refusal(inner, policy)
        if reason:
            return f"carries IPv4 {inner}, which {reason}"
    return ""


def _refusal(address: IPAddress, policy: DialPolicy | None) -> str:
    if address in METADATA_ADDRESSES:
        return "is a cloud metadata service address" + (
            " (link-local)" if address.is_link_local else ""
        )
    if (
        address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address in _THIS_NETWORK
    ):
        return "is a link-local, unspecified or multicast address"
    if policy is None:
        return ""
    if address.is_loopback:
        return "" if policy.allow_loopback else "is a loopback address"
    if not address.is_global or address in _SITE_LOCAL:
        return "" if policy.allow_private else "is a private or reserved address"
    return ""


def checked_addresses(host: str, answers: Iterable[str], policy: DialPolicy) -> list[str]:
    """The addresses `host` resolved to, in order, once every one passed `policy`.

    Every answer counts, not just the first: a dialer may fall back to any of them. Raises
    DialRefused naming the host and the first refused address.
    """
    passed: dict[str, None] = {}
    for text in answers:
        address = parse_address(text)
        if address is None:
            continue  # not an address: nothing to connect to
        reason = address_refusal(address, policy)
        if reason:
            raise DialRefused(host=host, address=str(address), reason=reason)
        passed[str(address)] = None
    return list(passed)
