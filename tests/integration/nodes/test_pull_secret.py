"""`pullbroker-sidecar pull-secret` against the node world: what it refuses to write."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.nodes.world import CAROL, LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


def _argv(world: NodeWorld, *args: str) -> list[str]:
    base = [
        sys.executable,
        "-m",
        "pullbroker_sidecar.cli",
        "pull-secret",
        "--home",
        str(world.home),
    ]
    return [*base, *args]


class TestPullSecret:
    """Working Secrets (GAR, ACR logins) and --watch are in tests/integration/logins."""

    def test_passthrough_login_is_refused(self, node_world: NodeWorld, leaks: LeakCheck) -> None:
        """A pass-through login (long-lived): exit 1, no Secret, why, no credential shown."""
        image = node_world.basic_app
        done = subprocess.run(
            _argv(node_world, "--namespace", "apps", "--name", "pb-pull", image.reference),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        leaks.output(done.stdout, done.stderr)
        assert done.returncode == 1
        assert done.stdout == ""
        assert "long-lived credential" in done.stderr
        assert f"{image.registry.host}/{image.repository}" in done.stderr
        assert node_world.basic.users[CAROL] not in done.stderr

    def test_an_image_without_a_login_fails_the_secret(
        self, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """A denied image among others: exit 1, one line naming it, no Secret on stdout."""
        denied = node_world.basic_other.reference
        done = subprocess.run(
            _argv(node_world, "-n", "apps", "--name", "x", denied, node_world.basic_app.reference),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        leaks.output(done.stdout, done.stderr)
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert denied in lines[0]
        assert "policy" in lines[0]

    def test_registry_without_logins_fails_with_the_way_out(
        self, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """A registry that gives nodes bearer tokens only: exit 1 saying how to pull instead."""
        done = subprocess.run(
            _argv(node_world, "-n", "apps", "--name", "x", node_world.via_door("team/app", "v1")),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        leaks.output(done.stdout, done.stderr)
        assert done.returncode == 1
        assert done.stdout == ""
        assert "--dest docker-daemon" in done.stderr
