"""Which local user opened a TCP connection to the mirror (Linux `/proc/net/tcp{,6}`).

A loopback TCP connection has two sockets on this host: ours, and the client's, whose
local address is our peer address and whose remote address is ours. The kernel lists
every TCP socket of the network namespace in `/proc/net/tcp` (IPv4) and `/proc/net/tcp6`
(IPv6, including v4-mapped) with the uid that created it, so the client's entry names its
owner. Addresses there are hex in host (little-endian) byte order, 32 bits at a time;
ports are big-endian hex.

SO_PEERCRED (what the daemon's Unix socket uses) does not exist for TCP; this is what
`ss -e` and `lsof` read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path

TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_Endpoint = tuple[bytes, int]


def _endpoint(address: tuple[object, ...]) -> list[_Endpoint]:
    """(packed address, port) of a socket address, in both forms for v4-mapped ones."""
    host, port = str(address[0]), int(str(address[1]))
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    forms = [(ip.packed, port)]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        forms.append((ip.ipv4_mapped.packed, port))
    elif isinstance(ip, ipaddress.IPv4Address):
        forms.append((ipaddress.IPv6Address(f"::ffff:{ip}").packed, port))
    return forms


def _decode(field: str) -> _Endpoint:
    """`0100007F:1F90` -> (b'\\x7f\\x00\\x00\\x01', 8080)."""
    address, _, port = field.partition(":")
    raw = bytes.fromhex(address)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return packed, int(port, 16)


def owner_in(lines: Iterable[str], client: list[_Endpoint], server: list[_Endpoint]) -> int | None:
    """The uid of the socket whose local end is `client` and remote end `server`."""
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not fields[0].rstrip(":").isdigit():
            continue  # the header line
        try:
            local, remote, uid = _decode(fields[1]), _decode(fields[2]), int(fields[7])
        except ValueError:
            continue
        if local in client and remote in server:
            return uid
    return None


def socket_owner(
    peer: tuple[object, ...], ours: tuple[object, ...], tables: Iterable[Path] = TABLES
) -> int | None:
    """The uid owning the client end of the connection `peer` -> `ours`, or None when
    no local socket matches (a remote client, or the client already went away)."""
    client, server = _endpoint(peer), _endpoint(ours)
    for table in tables:
        try:
            text = table.read_text(encoding="ascii")
        except OSError:
            continue
        uid = owner_in(text.splitlines(), client, server)
        if uid is not None:
            return uid
    return None
