"""The daemon's socket server and broker channel, in process."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from pullbroker_client.home import Home
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec
from pullbroker_sidecar.cli import main
from pullbroker_sidecar.daemon.channel import BrokerChannel, ChannelConfig
from pullbroker_sidecar.daemon.login_cache import LoginCache, Logins
from pullbroker_sidecar.daemon.run import images_from
from pullbroker_sidecar.daemon.server import SidecarServer
from pullbroker_sidecar.errors import SidecarError

from tests.unit.sidecar.issuer import FakeClock, StubLoginIssuer

HOST = "127.0.0.1:5000"


class StaticChannel:
    def status(self) -> dict[str, Any]:
        return {"broker": "127.0.0.1:1", "certificate_serial": "ab", "rebuilds": 0, "retries": 0}


@pytest.fixture
def short() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pbu-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _ask(path: Path, line: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    answer = await reader.readline()
    writer.close()
    await writer.wait_closed()
    document: dict[str, Any] = json.loads(answer)
    return document


async def _server(path: Path, **stub: Any) -> SidecarServer:
    clock = FakeClock()
    issuer = StubLoginIssuer(clock, **stub)
    logins = Logins(LoginCache(issuer, clock=clock), [f"{HOST}/team/app:v1"])
    server = SidecarServer(path, logins, StaticChannel())
    await server.start()
    return server


class TestServer:
    async def test_answers_each_op(self, short: Path) -> None:
        """ping, login, image_login and registries over the socket; the socket is 0600."""
        path = short / "s.sock"
        server = await _server(path)
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert (await _ask(path, b'{"v":1,"op":"ping"}\n'))["ok"]
            login = await _ask(path, b'{"v":1,"op":"login","host":"' + HOST.encode() + b'"}\n')
            assert (login["username"], login["secret"]) == ("robot", "secret-1")
            assert (login["identity_token"], login["passthrough"]) == (False, False)
            image = b'{"v":1,"op":"image_login","image":"' + HOST.encode() + b"/team/app@sha256:"
            image += b"a" * 64 + b'"}\n'
            keyed = await _ask(path, image)
            assert keyed["key"] == f"{HOST}/team/app"
            listed = await _ask(path, b'{"v":1,"op":"registries"}\n')
            assert listed["registries"] == {HOST: "robot"}
            status = await _ask(path, b'{"v":1,"op":"status"}\n')
            assert (status["served"], status["broker_calls"]) == (2, 1)
        finally:
            await server.close()
        assert not path.exists()

    @pytest.mark.parametrize(
        "line", [b"garbage\n", b'{"v":1,"op":"explode"}\n', b'{"v":1,"op":"login"}\n', b"[1]\n"]
    )
    async def test_bad_requests_get_bad_request(self, short: Path, line: bytes) -> None:
        """Malformed lines, unknown ops and missing fields: bad_request, and the daemon lives."""
        path = short / "s.sock"
        server = await _server(path)
        try:
            answer = await _ask(path, line)
            assert (answer["ok"], answer["error"]) == (False, "bad_request")
            assert (await _ask(path, b'{"v":1,"op":"ping"}\n'))["ok"]
        finally:
            await server.close()

    async def test_refusal_carries_code_and_reason(self, short: Path) -> None:
        """A bearer-only registry: no_login with the reason, counted by code."""
        path = short / "s.sock"
        server = await _server(path, refuse=True)
        try:
            answer = await _ask(path, b'{"v":1,"op":"login","host":"' + HOST.encode() + b'"}\n')
            assert answer["error"] == "no_login"
            assert "--dest docker-daemon" in answer["message"]
            assert server.counters.by_code == {"no_login": 1}
        finally:
            await server.close()

    async def test_identity_token_and_passthrough_flags_reach_the_helpers(
        self, short: Path
    ) -> None:
        """The answer tells the helpers how to hand the secret on (refresh token, memory only)."""
        path = short / "s.sock"
        server = await _server(path, identity_token=True, passthrough=True)
        try:
            answer = await _ask(path, b'{"v":1,"op":"login","host":"' + HOST.encode() + b'"}\n')
            assert (answer["identity_token"], answer["passthrough"]) == (True, True)
        finally:
            await server.close()

    async def test_socket_path_too_long_is_refused(self, short: Path) -> None:
        """A path beyond the 107-byte limit of Unix sockets fails with what to do."""
        with pytest.raises(SidecarError, match="shorter --socket"):
            await _server(short / ("x" * 120))

    async def test_a_file_in_the_way_is_not_removed(self, short: Path) -> None:
        """A regular file at the socket path is left alone, and named."""
        path = short / "s.sock"
        path.write_text("keep me")
        with pytest.raises(SidecarError, match="not a socket"):
            await _server(path)
        assert path.read_text() == "keep me"


def _node_files(home: Home, authority: CertificateAuthority) -> str:
    cert, key = authority.issue(LeafSpec("node-test", uris=("spiffe://x/node/t",), client=True))
    home.tls_dir.mkdir(parents=True, exist_ok=True)
    home.cert("node").write_bytes(cert)
    home.key("node").write_bytes(key)
    return format(x509.load_pem_x509_certificate(cert).serial_number, "x")


class TestChannel:
    async def test_half_written_rotation_keeps_the_working_channel(self, tmp_path: Path) -> None:
        """New cert with the old key: no rebuild; once the key follows, one rebuild."""
        home = Home(tmp_path / "home")
        authority = CertificateAuthority.generate("unit CA")
        home.tls_dir.mkdir(parents=True)
        home.ca_cert.write_bytes(authority.cert_pem())
        home.broker_json.write_text(json.dumps({"address": "127.0.0.1:1"}))
        first = _node_files(home, authority)
        channel = BrokerChannel(ChannelConfig(home))
        await channel.start()
        try:
            old_key = home.key("node").read_bytes()
            second = _node_files(home, authority)
            new_key = home.key("node").read_bytes()
            home.key("node").write_bytes(old_key)
            assert await channel.refresh() is False
            assert channel.status()["certificate_serial"] == first
            home.key("node").write_bytes(new_key)
            assert await channel.refresh() is True
            assert channel.status()["certificate_serial"] == second
            assert channel.status()["rebuilds"] == 1
        finally:
            await channel.close()

    async def test_new_broker_address_is_picked_up(self, tmp_path: Path) -> None:
        """broker.json rewritten (the broker moved): the next refresh dials the new address."""
        home = Home(tmp_path / "home")
        authority = CertificateAuthority.generate("unit CA")
        home.tls_dir.mkdir(parents=True)
        home.ca_cert.write_bytes(authority.cert_pem())
        home.broker_json.write_text(json.dumps({"address": "127.0.0.1:1"}))
        _node_files(home, authority)
        channel = BrokerChannel(ChannelConfig(home))
        await channel.start()
        try:
            home.broker_json.write_text(json.dumps({"address": "127.0.0.1:2", "pid": 1}))
            assert await channel.refresh() is True
            assert channel.status()["broker"] == "127.0.0.1:2"
        finally:
            await channel.close()


class TestRunCommand:
    def test_images_file_adds_to_image_flags(self, tmp_path: Path) -> None:
        """--images-file: one reference per line, comments and blanks ignored."""
        listed = tmp_path / "images"
        listed.write_text("# runs on this host\nr.example/a:1\n\n  r.example/b:2  # pinned\n")
        args = argparse.Namespace(image=["r.example/c:3"], images_file=str(listed))
        assert images_from(args) == ["r.example/c:3", "r.example/a:1", "r.example/b:2"]

    def test_missing_node_certificate_is_one_line(
        self, capsys: pytest.CaptureFixture[str], tmp_home: Path, short: Path
    ) -> None:
        """No node certificate: exit 1 before any socket exists, naming the file and flag."""
        argv = ["run", "--home", str(tmp_home), "--broker", "127.0.0.1:9"]
        try:
            assert main([*argv, "--socket", str(short / "s.sock")]) == 1
        finally:
            structlog.reset_defaults()  # `run` configures logging for the whole process
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("pullbroker-sidecar: error: run failed: ")
        assert "does not exist" in line
        assert not (short / "s.sock").exists()
