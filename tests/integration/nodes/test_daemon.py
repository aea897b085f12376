"""`pullbroker-sidecar run`: socket permissions, certificate rotation, broker restarts.

These tests use a broker of their own (a fresh home, dev policy: nodes may pull anything),
because they rotate its node certificate and restart it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec

from tests.harness.broker_process import BrokerProcess
from tests.harness.process import HarnessError
from tests.harness.runtimes import remove_tree, run, short_dir
from tests.harness.sidecar import SidecarDaemon
from tests.integration.nodes.world import CAROL, LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(
    node_world: NodeWorld, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """A broker of this module's own, with the Basic registry as a pass-through record."""
    broker = BrokerProcess(tmp_path_factory.mktemp("daemon-broker") / "home").start()
    try:
        basic = node_world.basic
        broker.register("basic", basic.url, basic.ca_pem, CAROL, basic.users[CAROL],
                 passthrough=True)  # fmt: skip
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short folder readable by other users (for the other-user test)."""
    path = short_dir("daemon")
    path.chmod(0o755)
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture
def own_daemon(own_broker: BrokerProcess, folder: Path) -> Iterator[SidecarDaemon]:
    sidecar = SidecarDaemon(own_broker.home.root, folder / "s.sock", rotation_check=0.1)
    sidecar.start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


def _image(world: NodeWorld, n: int) -> str:
    """A repository nobody asked for before: every request is a broker call."""
    return f"{world.basic.host}/team/nodes-loop-{n}-{time.monotonic_ns()}:v1"


class TestSocket:
    def test_socket_is_owner_only(self, own_daemon: SidecarDaemon, leaks: LeakCheck) -> None:
        """The socket file is 0600 and owned by the daemon's user."""
        st = own_daemon.socket.stat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()

    def test_other_user_gets_no_answer_even_if_the_mode_is_widened(
        self, own_daemon: SidecarDaemon, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """A socket chmod-ed 0666 by mistake still answers nobody but its user (SO_PEERCRED)."""
        if shutil.which("runuser") is None:
            pytest.skip("runuser not installed (util-linux)")
        own_daemon.socket.chmod(0o666)
        probe = "\n".join(
            [
                "import json, socket, sys",
                "s = socket.socket(socket.AF_UNIX)",
                "s.connect(sys.argv[1])",
                "request = {'v': 1, 'op': 'image_login', 'image': sys.argv[2]}",
                "try:",
                "    s.sendall(json.dumps(request).encode() + b'\\n')",
                "    print(repr(s.recv(65536)))",
                "except (BrokenPipeError, ConnectionResetError):",
                "    print(repr(b''))  # closed on us: no answer either",
            ]
        )
        image = node_world.basic_app.reference
        done = run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe,
                    str(own_daemon.socket), image])  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "b''"
        assert own_daemon.ask("ping")["ok"]

    def test_a_live_socket_is_not_taken_over(
        self, own_daemon: SidecarDaemon, own_broker: BrokerProcess
    ) -> None:
        """A second daemon on the same socket exits with one line; the first keeps serving."""
        argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "run"]
        argv += ["--home", str(own_broker.home.root), "--socket", str(own_daemon.socket)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1
        assert "already serves" in done.stderr.strip().splitlines()[-1]
        assert own_daemon.ask("ping")["ok"]

    def test_a_stale_socket_file_is_replaced(self, own_broker: BrokerProcess, folder: Path) -> None:
        """A socket file nobody listens on (a crash) does not stop the daemon from starting."""
        path = folder / "stale.sock"
        sidecar = SidecarDaemon(own_broker.home.root, path).start()
        assert sidecar.proc is not None
        sidecar.proc.kill()  # no clean-up: the file stays
        sidecar.proc.wait()
        assert path.exists()
        again = SidecarDaemon(own_broker.home.root, path)
        try:
            again.start()
            assert again.ask("ping")["ok"]
        finally:
            again.stop()
        assert not path.exists()


class TestRotation:
    def test_certificate_rotation_drops_no_request(
        self,
        own_daemon: SidecarDaemon,
        own_broker: BrokerProcess,
        node_world: NodeWorld,
        leaks: LeakCheck,
    ) -> None:
        """New node cert and key while requests run back to back: every one succeeds."""
        home = own_broker.home
        first = own_daemon.status()["certificate_serial"]
        answers: list[dict[str, Any]] = []
        stop = threading.Event()

        def loop() -> None:
            n = 0
            while not stop.is_set():
                answers.append(own_daemon.ask("image_login", image=_image(node_world, n)))
                n += 1

        worker = threading.Thread(target=loop)
        worker.start()
        try:
            _wait(lambda: len(answers) >= 5)
            serial = _rotate(home.cert("node"), home.key("node"), home.ca_cert, home.ca_key)
            _wait(lambda: own_daemon.status()["certificate_serial"] == serial)
            rotated_at = len(answers)
            _wait(lambda: len(answers) >= rotated_at + 10)
        finally:
            stop.set()
            worker.join(timeout=60)
        failed = [a for a in answers if not a.get("ok")]
        assert failed == []
        status = own_daemon.status()
        assert status["rebuilds"] >= 1
        assert serial != first
        assert status["broker_calls"] >= len(answers)


class TestBrokerAway:
    def test_request_waits_for_a_restarted_broker(
        self,
        own_daemon: SidecarDaemon,
        own_broker: BrokerProcess,
        node_world: NodeWorld,
        leaks: LeakCheck,
    ) -> None:
        """Broker down, then back on a new port: a request made meanwhile succeeds."""
        assert own_daemon.ask("image_login", image=_image(node_world, 0))["ok"]
        old_address = own_daemon.status()["broker"]
        own_broker.stop()
        result: list[dict[str, Any]] = []
        worker = threading.Thread(
            target=lambda: result.append(own_daemon.ask("image_login", image=_image(node_world, 1)))
        )
        worker.start()
        try:
            _wait(lambda: own_daemon.status()["retries"] >= 2)
        finally:
            own_broker.start()
            worker.join(timeout=60)
        assert len(result) == 1
        assert result[0]["ok"], result
        status = own_daemon.status()
        assert status["broker"] != old_address
        assert status["broker"] == own_broker.home.read_address()


def _rotate(cert: Path, key: Path, ca_cert: Path, ca_key: Path) -> str:
    """Replace the node certificate and key (atomically each, key first); the new serial."""
    current = x509.load_pem_x509_certificate(cert.read_bytes())
    uris = tuple(
        current.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    )
    name = current.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    authority = CertificateAuthority.load(ca_cert, ca_key)
    cert_pem, key_pem = authority.issue(LeafSpec(str(name), uris=uris, client=True))
    for path, data, mode in ((key, key_pem, 0o600), (cert, cert_pem, 0o644)):
        temp = path.with_name(path.name + ".new")
        temp.write_bytes(data)
        temp.chmod(mode)
        os.replace(temp, path)
    return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise HarnessError("condition not met in time")
