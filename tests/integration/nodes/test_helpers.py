"""`docker-credential-pullbroker` speaks the docker-credential-helpers protocol exactly."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.harness.runtimes import run
from tests.harness.sidecar import (
    DOCKER_HELPER,
    KUBELET_PROVIDER,
    SidecarDaemon,
    installed,
    node_env,
)
from tests.integration.nodes.world import CAROL, LeakCheck, NodeWorld

pytestmark = pytest.mark.integration

NOT_FOUND = "credentials not found in native keychain\n"


def _helper(
    helper_bin: Path, socket: Path, action: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return run([str(helper_bin / DOCKER_HELPER), action], stdin=stdin,
               env=node_env(helper_bin, socket))  # fmt: skip


@pytest.fixture(scope="module")
def bearer_daemon(node_world: NodeWorld, node_dir: Path) -> Iterator[SidecarDaemon]:
    """A daemon serving only an image of the bearer-token registry (in the policy)."""
    images = [node_world.via_door("team/app", "v1")]
    sidecar = SidecarDaemon(node_world.home, node_dir / "bearer.sock", images).start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


class TestGet:
    @pytest.mark.parametrize("form", ["https://{host}", "{host}", "{host}\n", "https://{host}/v2/"])
    def test_login_for_each_server_url_form(
        self,
        form: str,
        node_world: NodeWorld,
        daemon: SidecarDaemon,
        helper_bin: Path,
        leaks: LeakCheck,
    ) -> None:
        """Scheme or not, newline or not: the registry's login, ServerURL echoed as given."""
        server = form.format(host=node_world.basic.host)
        done = _helper(helper_bin, daemon.socket, "get", server)
        assert done.returncode == 0, done.stdout + done.stderr
        answer = json.loads(done.stdout)
        assert answer == {
            "ServerURL": server.strip(),
            "Username": CAROL,
            "Secret": node_world.basic.users[CAROL],
        }

    def test_unknown_registry_is_not_found(
        self, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """A registry the daemon does not serve: the exact not-found text, exit 1."""
        done = _helper(helper_bin, daemon.socket, "get", "registry.example.com")
        assert (done.returncode, done.stdout) == (1, NOT_FOUND)

    def test_bearer_only_registry_is_not_found_with_the_reason(
        self,
        node_world: NodeWorld,
        bearer_daemon: SidecarDaemon,
        helper_bin: Path,
        leaks: LeakCheck,
    ) -> None:
        """Bearer tokens are never handed out as a login; stderr says what to run instead."""
        done = _helper(helper_bin, bearer_daemon.socket, "get", node_world.door.host)
        leaks.output(done.stdout, done.stderr)
        assert (done.returncode, done.stdout) == (1, NOT_FOUND)
        assert "--dest docker-daemon" in done.stderr
        assert bearer_daemon.status()["refused_by_code"] == {"no_login": 1}

    def test_no_daemon_is_a_hard_error(self, helper_bin: Path, node_dir: Path) -> None:
        """Without a daemon the helper fails loudly (not "not found", which means anonymous)."""
        done = _helper(helper_bin, node_dir / "nobody-here.sock", "get", "registry.example.com")
        assert done.returncode == 1
        assert done.stdout != NOT_FOUND
        assert "pullbroker-sidecar run" in done.stdout


class TestOtherActions:
    def test_list_names_the_registries_served(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """`list` maps every served registry to a username (after a login: its user)."""
        _helper(helper_bin, daemon.socket, "get", node_world.basic.host)
        done = _helper(helper_bin, daemon.socket, "list")
        leaks.output(done.stdout, done.stderr)
        assert done.returncode == 0
        listed = json.loads(done.stdout)
        assert listed[node_world.basic.host] == CAROL
        assert node_world.door.host in listed

    @pytest.mark.parametrize("action", ["store", "erase"])
    def test_store_and_erase_refuse(
        self, action: str, daemon: SidecarDaemon, helper_bin: Path, node_dir: Path
    ) -> None:
        """Credentials live in the broker: store/erase exit 1 saying so, and keep nothing."""
        payload = '{"ServerURL":"r.example","Username":"u","Secret":"CANARY-stored"}'
        done = _helper(helper_bin, daemon.socket, action, payload)
        assert done.returncode == 1
        assert "pullbroker manages registry credentials" in done.stdout
        assert "CANARY-stored" not in done.stdout + done.stderr

    def test_version(self, helper_bin: Path, daemon: SidecarDaemon) -> None:
        """`version` answers without asking the daemon."""
        done = _helper(helper_bin, daemon.socket, "version")
        assert (done.returncode, done.stdout.split()[0]) == (0, "pullbroker")


class TestInstalled:
    def test_console_scripts_are_installed(self) -> None:
        """The package installs both helpers under the names runtimes look for."""
        scripts = {e.name for e in entry_points(group="console_scripts")}
        assert {DOCKER_HELPER, KUBELET_PROVIDER} <= scripts
        assert installed(DOCKER_HELPER) is not None
        assert installed(KUBELET_PROVIDER) is not None
