"""The daemon's socket protocol under arbitrary input: only the package's own errors escape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pullbroker_client.broker import IssuedRegistryLogin
from pullbroker_client.jsonlimits import JSONTooDeep, loads_bounded
from pullbroker_client.secret import Secret
from pullbroker_sidecar.daemon import protocol
from pullbroker_sidecar.daemon.login_cache import LoginCache, Logins
from pullbroker_sidecar.daemon.server import SidecarServer
from pullbroker_sidecar.errors import DaemonUnavailable

from tests.unit.sidecar.issuer import FakeClock, StubLoginIssuer

HOST = "127.0.0.1:5000"
OPS = ["ping", "status", "login", "image_login", "registries", "explode", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {"v": st.integers(-2, 3) | st.just(1), "op": st.sampled_from(OPS) | st.text(max_size=12)},
    optional={
        "host": json_values | st.just(HOST),
        "image": json_values | st.just(f"{HOST}/team/app:v1"),
        "service_account_token": json_values,
    },
)


def nested(depth: int) -> bytes:
    return b'{"v":1,"op":' + b"[" * depth + b"]" * depth + b"}\n"


class TestDecode:
    """decode() and loads_bounded() turn any bytes into a dict or a ValueError."""

    @given(st.binary(max_size=512))
    def test_arbitrary_bytes(self, line: bytes) -> None:
        """Arbitrary bytes: a dict, or ValueError; never another exception."""
        with contextlib.suppress(ValueError):
            assert isinstance(protocol.decode(line), dict)

    @given(json_values)
    def test_any_shallow_json_round_trips(self, value: Any) -> None:
        """A document within the depth bound parses as json.loads would (NaN aside)."""
        text = json.dumps(value)
        assert json.dumps(loads_bounded(text)) == text

    @pytest.mark.parametrize("depth", [9, 5_000, 100_000])
    def test_deep_frames_are_value_errors(self, depth: int) -> None:
        """A frame nested past the bound is JSONTooDeep (a ValueError), not RecursionError."""
        with pytest.raises(JSONTooDeep):
            protocol.decode(nested(depth))

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Brackets in strings (escaped quotes included) are text, not nesting."""
        text = json.dumps({"a": "[" * 500 + '\\"' + "{" * 500})
        assert loads_bounded(text, max_depth=2) == json.loads(text)

    @pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "utf-32-be", "utf-32-le"])
    def test_utf16_and_utf32_cannot_hide_nesting(self, encoding: str) -> None:
        """Only UTF-8 is JSON here: a UTF-16/32 frame (whose bytes could hide brackets from
        the depth check) is a ValueError, however deep."""
        text = '{"op":"\u4e22","x":' + "[" * 500 + "]" * 500 + ',"y":"\u4e22"}'
        # Either the codec or the parser refuses it: both are ValueError.
        with pytest.raises(ValueError):  # noqa: PT011
            protocol.decode((text + "\n").encode(encoding))

    def test_thousands_of_digits_are_a_value_error(self) -> None:
        """A number too long for int() is a ValueError like any other malformed document."""
        with pytest.raises(ValueError, match="digits"):
            loads_bounded(b'{"n": ' + b"9" * 5000 + b"}")


@pytest.fixture
def running_server() -> Iterator[tuple[asyncio.AbstractEventLoop, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="pbp-", dir="/tmp"))
    loop = asyncio.new_event_loop()
    clock = FakeClock()
    logins = Logins(LoginCache(StubLoginIssuer(clock), clock=clock), [f"{HOST}/team/app:v1"])
    path = folder / "s.sock"
    server = SidecarServer(path, logins, _Channel())
    loop.run_until_complete(server.start())
    try:
        yield loop, path
    finally:
        loop.run_until_complete(server.close())
        loop.close()
        shutil.rmtree(folder, ignore_errors=True)


class _Channel:
    def status(self) -> dict[str, Any]:
        return {"broker": "127.0.0.1:1", "certificate_serial": "ab", "rebuilds": 0, "retries": 0}


async def _exchange(path: Path, line: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


class TestServerFrames:
    """The daemon answers every frame with exactly one JSON line, and keeps serving."""

    def test_any_request_gets_one_answer_line(
        self, running_server: tuple[asyncio.AbstractEventLoop, Path]
    ) -> None:
        """Arbitrary request objects: one line, ok true or a known error code."""
        loop, path = running_server

        @given(requests)
        def check(request: dict[str, Any]) -> None:
            line = json.dumps(request).encode() + b"\n"
            answer = loop.run_until_complete(_exchange(path, line))
            assert answer.count(b"\n") == 1
            assert answer.endswith(b"\n")
            document = json.loads(answer)
            assert document["ok"] is True or document["error"] in {
                protocol.NOT_FOUND,
                protocol.DENIED,
                protocol.NO_LOGIN,
                protocol.UNAVAILABLE,
                protocol.BAD_REQUEST,
            }  # never INTERNAL: arbitrary input is the caller's fault, not the daemon's

        check()

    @pytest.mark.parametrize("depth", [9, 20_000])
    def test_deep_frame_is_bad_request_and_daemon_lives(
        self, running_server: tuple[asyncio.AbstractEventLoop, Path], depth: int
    ) -> None:
        """A deeply nested frame is one bad_request line, and the next ping is answered."""
        loop, path = running_server
        answer = json.loads(loop.run_until_complete(_exchange(path, nested(depth))))
        assert (answer["ok"], answer["error"]) == (False, protocol.BAD_REQUEST)
        ping = json.loads(loop.run_until_complete(_exchange(path, b'{"v":1,"op":"ping"}\n')))
        assert ping["ok"] is True

    @pytest.mark.parametrize("field", ["image", "service_account_token"])
    def test_lone_surrogates_are_bad_requests(
        self, running_server: tuple[asyncio.AbstractEventLoop, Path], field: str
    ) -> None:
        """A \\ud800 escape (no UTF-8 spelling) in a field is bad_request, not a traceback."""
        loop, path = running_server
        request = {"v": 1, "op": "image_login", "image": f"{HOST}/team/app:v1", field: "\ud800x"}
        line = json.dumps(request).encode() + b"\n"
        answer = json.loads(loop.run_until_complete(_exchange(path, line)))
        assert (answer["ok"], answer["error"]) == (False, protocol.BAD_REQUEST)

    def test_an_unexpected_failure_is_one_internal_line(self) -> None:
        """An issuer that fails unexpectedly: the helper still gets one line, `internal`."""
        folder = Path(tempfile.mkdtemp(prefix="pbi-", dir="/tmp"))
        loop = asyncio.new_event_loop()
        clock = FakeClock()
        logins = Logins(LoginCache(_Exploding(), clock=clock), [f"{HOST}/team/app:v1"])
        server = SidecarServer(folder / "s.sock", logins, _Channel())
        loop.run_until_complete(server.start())
        try:
            line = json.dumps({"v": 1, "op": "login", "host": HOST}).encode() + b"\n"
            answer = loop.run_until_complete(_exchange(folder / "s.sock", line))
        finally:
            loop.run_until_complete(server.close())
            loop.close()
            shutil.rmtree(folder, ignore_errors=True)
        assert answer.count(b"\n") == 1
        assert json.loads(answer)["error"] == protocol.INTERNAL


class _Exploding:
    """A RegistryLoginIssuer with a bug: every call raises something unexpected."""

    async def issue_registry_login(
        self,
        image: str,
        registry: str = "",
        force_refresh: bool = False,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin:
        raise RuntimeError("a bug")


class _ScriptedDaemon:
    """A Unix socket that answers every connection with `reply`, as a confused daemon might."""

    def __init__(self, path: Path) -> None:
        self.reply = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class TestClientAnswers:
    """ask() returns a dict or raises DaemonUnavailable, whatever the daemon sends back."""

    def test_any_answer_bytes(self) -> None:
        """Arbitrary answer bytes (deep nesting included): a dict or DaemonUnavailable only."""
        folder = Path(tempfile.mkdtemp(prefix="pbc-", dir="/tmp"))
        daemon = _ScriptedDaemon(folder / "d.sock")
        try:

            @given(st.binary(max_size=256) | st.integers(0, 20_000).map(nested))
            def check(reply: bytes) -> None:
                daemon.reply = reply
                with contextlib.suppress(DaemonUnavailable):
                    assert isinstance(protocol.ask(str(folder / "d.sock"), {"op": "ping"}, 5), dict)

            check()
        finally:
            daemon.close()
            shutil.rmtree(folder, ignore_errors=True)
