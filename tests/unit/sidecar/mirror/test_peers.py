"""The uid owning a loopback client socket, from /proc/net/tcp{,6}."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pullbroker_sidecar.mirror.peers import owner_in, socket_owner

# 127.0.0.1:40000 -> 127.0.0.1:5005 owned by uid 1000, and the reverse (the server side).
TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:138D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0100007F:9C40 0100007F:138D 01 00000000:00000000 00:00000000 00000000  1000        0 2
"""
_V6_LOOPBACK = "00000000000000000000000001000000"
TABLE6 = (
    "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout\n"
    f"   0: {_V6_LOOPBACK}:9C40 {_V6_LOOPBACK}:138D 01 00000000:00000000 00:00000000 "
    "00000000   33        0 3\n"
)


class TestTables:
    """Entries are matched by the client's local end and the server's address."""

    def test_ipv4_client(self, tmp_path: Path) -> None:
        """The client's entry (local = peer address) names its uid, not the server's."""
        (tmp_path / "tcp").write_text(TABLE)
        owner = socket_owner(("127.0.0.1", 40000), ("127.0.0.1", 5005), [tmp_path / "tcp"])
        assert owner == 1000

    def test_ipv6_loopback(self, tmp_path: Path) -> None:
        """::1 is four little-endian words in tcp6."""
        (tmp_path / "tcp6").write_text(TABLE6)
        owner = socket_owner(("::1", 40000, 0, 0), ("::1", 5005, 0, 0), [tmp_path / "tcp6"])
        assert owner == 33

    def test_unknown_peer(self) -> None:
        """No matching socket: None (the mirror refuses)."""
        assert (
            owner_in(TABLE.splitlines(), [(b"\x7f\x00\x00\x01", 1)], [(b"\x7f\x00\x00\x01", 2)])
            is None
        )


class TestLiveSocket:
    """Against the kernel's own table: a connection this process opened is ours."""

    def test_own_connection(self) -> None:
        """The client socket this test opens belongs to this process's uid."""
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            accepted, peer = server.accept()
            try:
                assert socket_owner(peer, accepted.getsockname()) == os.getuid()
            finally:
                accepted.close()
                client.close()
