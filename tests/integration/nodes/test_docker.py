"""dockerd 20.10 and the docker CLI: pulls through `credHelpers`, loads through the Engine API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.runtimes import Dockerd
from tests.harness.sidecar import SidecarDaemon, node_env
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


def _docker_config(folder: Path, world: NodeWorld) -> Path:
    """A DOCKER_CONFIG folder whose config.json sends every test registry to the helper."""
    folder.mkdir(parents=True, exist_ok=True)
    hosts = (world.basic.host, world.basic_b.host, world.door.host)
    (folder / "config.json").write_text(
        json.dumps({"credHelpers": dict.fromkeys(hosts, "pullbroker")})
    )
    return folder


def _sidecar_pull(world: NodeWorld, image: str, dest: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull", image, "--dest", dest]
    argv += ["--home", str(world.home), "--output", "json", "--quiet"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


class TestCredentialHelper:
    def test_docker_pull_uses_the_login_the_daemon_serves(
        self,
        node_world: NodeWorld,
        dockerd: Dockerd,
        daemon: SidecarDaemon,
        helper_bin: Path,
        node_dir: Path,
        leaks: LeakCheck,
    ) -> None:
        """`docker pull` of a private image works through credHelpers; nothing is stored."""
        config = _docker_config(node_dir / "docker-config-ok", node_world)
        env = node_env(helper_bin, daemon.socket)
        image = node_world.basic_app
        pulled = dockerd.docker(["pull", image.reference], config=config, env=env)
        leaks.output(pulled.stdout, pulled.stderr)
        assert pulled.returncode == 0, pulled.stderr
        inspected = dockerd.docker(["image", "inspect", image.reference], env=env)
        found = json.loads(inspected.stdout)[0]
        assert found["Id"] == image.config_digest
        assert f"{image.registry.host}/{image.repository}@{image.digest}" in found["RepoDigests"]
        assert json.loads((config / "config.json").read_text()) == {
            "credHelpers": dict.fromkeys(
                (node_world.basic.host, node_world.basic_b.host, node_world.door.host),
                "pullbroker",
            )
        }

    def test_repository_outside_the_policy_is_pull_access_denied(
        self,
        node_world: NodeWorld,
        dockerd: Dockerd,
        daemon: SidecarDaemon,
        helper_bin: Path,
        node_dir: Path,
        leaks: LeakCheck,
    ) -> None:
        """The broker denies team/other: the helper says "not found", docker goes anonymous
        and the registry refuses it ("pull access denied"); the helper's reason is shown."""
        config = _docker_config(node_dir / "docker-config-denied", node_world)
        env = node_env(helper_bin, daemon.socket)
        before = daemon.status()["refused_by_code"].get("denied", 0)
        image = node_world.via_door("team/other", "v1")
        pulled = dockerd.docker(["pull", image], config=config, env=env)
        leaks.output(pulled.stdout, pulled.stderr)
        assert pulled.returncode != 0
        assert "pull access denied" in pulled.stderr
        assert "policy does not let this node pull" in pulled.stderr
        assert daemon.status()["refused_by_code"].get("denied", 0) == before + 1
        listed = dockerd.docker(["image", "ls", "--format", "{{.Repository}}"], env=env)
        assert f"{node_world.door.host}/team/other" not in listed.stdout.split()


class TestDockerDaemonDestination:
    def test_private_image_is_loaded_into_dockerd(
        self, node_world: NodeWorld, dockerd: Dockerd, leaks: LeakCheck
    ) -> None:
        """`pull --dest docker-daemon:SOCKET` loads the image; dockerd names it and its ID."""
        image = node_world.seed("team/nodes-docker", "v1", [4096, 2048])
        reference = node_world.via_door(image.repository, image.tag)
        result = _sidecar_pull(node_world, reference, f"docker-daemon:{dockerd.host}")
        leaks.output(result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["dest"] == "docker-daemon"
        assert document["name"] == reference
        inspected = dockerd.docker(["image", "inspect", reference])
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)[0]["Id"] == document["image_id"]
        assert document["image_id"] == image.image.manifests[0].config_digest
