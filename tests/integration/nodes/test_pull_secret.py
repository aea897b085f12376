"""`pullbroker-sidecar pull-secret`: a dockerconfigjson Secret whose logins work, kept fresh."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.integration.nodes.world import CAROL, LeakCheck, NodeWorld, registry_get

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


def _auths(secret: dict[str, Any]) -> dict[str, dict[str, str]]:
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auths: dict[str, dict[str, str]] = config["auths"]
    return auths


class TestPullSecret:
    def test_yaml_secret_holds_a_working_login_per_repository(
        self, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """The YAML Secret is a dockerconfigjson keyed host/repo whose login pulls the image."""
        image = node_world.basic_app
        done = subprocess.run(
            _argv(node_world, "--namespace", "apps", "--name", "pb-pull", image.reference),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        leaks.output(done.stderr)
        assert done.returncode == 0, done.stderr
        secret = yaml.safe_load(done.stdout)
        assert secret["kind"] == "Secret"
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert secret["metadata"]["namespace"] == "apps"
        assert secret["metadata"]["name"] == "pb-pull"
        assert "pullbroker.io/expires-at" in secret["metadata"]["annotations"]
        auths = _auths(secret)
        key = f"{image.registry.host}/{image.repository}"
        assert list(auths) == [key]
        entry = auths[key]
        assert entry["username"] == CAROL
        assert base64.b64decode(entry["auth"]).decode() == f"{CAROL}:{entry['password']}"
        status, digest = registry_get(
            image.registry, f"/v2/{image.repository}/manifests/{image.tag}", entry
        )
        assert (status, digest) == (200, image.digest)

    def test_an_image_without_a_login_fails_the_secret(
        self, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """A denied image among others: exit 1, one line naming it, no Secret on stdout."""
        denied = node_world.basic_other.reference
        done = subprocess.run(
            _argv(node_world, "-n", "apps", "--name", "x", node_world.basic_app.reference, denied),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        leaks.output(done.stdout, done.stderr)
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert denied in lines[0]
        assert "policy" in lines[0]

    def test_watch_renders_again_and_stops_on_sigterm(
        self, node_world: NodeWorld, leaks: LeakCheck
    ) -> None:
        """--watch -o json prints one Secret per interval until SIGTERM, then exits 0."""
        argv = _argv(node_world, "-n", "apps", "--name", "w", node_world.basic_app.reference,
                     "--watch", "--max-interval", "0.5", "--output", "json")  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            documents = [json.loads(proc.stdout.readline()) for _ in range(2)]
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        leaks.output(stderr)
        assert proc.returncode == 0
        assert [d["metadata"]["name"] for d in documents] == ["w", "w"]
        assert all(list(_auths(d)) == [f"{node_world.basic.host}/team/app"] for d in documents)
