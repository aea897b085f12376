"""podman and skopeo: pulls through `credHelpers` in an `--authfile`, logins from the daemon."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

import pytest

from tests.harness.images import inspect_raw
from tests.harness.process import HarnessError, require_tool
from tests.harness.registry import TokenAuthRegistry
from tests.harness.runtimes import Podman, run
from tests.harness.sidecar import SidecarDaemon, node_env
from tests.harness.standard import ALICE
from tests.integration.nodes.world import ACCEPT, LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


def _authfile(folder: Path, world: NodeWorld) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    hosts = (world.basic.host, world.basic_b.host, world.door.host)
    path = folder / "auth.json"
    path.write_text(json.dumps({"credHelpers": dict.fromkeys(hosts, "pullbroker")}))
    return path


class TestSkopeo:
    def test_copy_through_the_credential_helper(
        self,
        node_world: NodeWorld,
        daemon: SidecarDaemon,
        helper_bin: Path,
        node_dir: Path,
        tmp_path: Path,
        leaks: LeakCheck,
    ) -> None:
        """skopeo copies a private image with the login from `--authfile` credHelpers."""
        auth = _authfile(node_dir / "skopeo-auth", node_world)
        image = node_world.basic_app
        dest = tmp_path / "copied"
        argv = [require_tool("skopeo"), "copy", "--authfile", str(auth)]
        argv += ["--src-cert-dir", str(image.registry.ca_dir)]
        argv += [f"docker://{image.reference}", f"oci:{dest}:{image.tag}"]
        copied = run(argv, env=node_env(helper_bin, daemon.socket))
        leaks.output(copied.stdout, copied.stderr)
        assert copied.returncode == 0, copied.stderr
        index = json.loads((dest / "index.json").read_text())
        assert index["manifests"][0]["digest"] == image.digest
        leaks.folders.append(tmp_path)

    def test_denied_repository_is_not_served(
        self,
        node_world: NodeWorld,
        daemon: SidecarDaemon,
        helper_bin: Path,
        node_dir: Path,
        leaks: LeakCheck,
    ) -> None:
        """skopeo asking for team/other gets no login (policy) and the registry refuses it."""
        auth = _authfile(node_dir / "skopeo-auth-denied", node_world)
        before = daemon.status()["refused_by_code"].get("denied", 0)
        argv = [require_tool("skopeo"), "inspect", "--authfile", str(auth)]
        argv += ["--cert-dir", str(node_world.token_registry.ca_dir)]
        argv += [f"docker://{node_world.via_door('team/other', 'v1')}"]
        inspected = run(argv, env=node_env(helper_bin, daemon.socket))
        leaks.output(inspected.stdout, inspected.stderr)
        assert inspected.returncode != 0
        assert "denied" in inspected.stderr or "unauthorized" in inspected.stderr
        assert daemon.status()["refused_by_code"].get("denied", 0) == before + 1


class TestPodman:
    def test_pull_through_the_credential_helper(
        self,
        node_world: NodeWorld,
        daemon: SidecarDaemon,
        helper_bin: Path,
        node_dir: Path,
        podman: Podman,
        leaks: LeakCheck,
    ) -> None:
        """`podman pull --authfile` with credHelpers stores the private image, digest intact."""
        auth = _authfile(node_dir / "podman-auth", node_world)
        image = node_world.basic_app
        env = node_env(helper_bin, daemon.socket)
        argv = ["pull", "--authfile", str(auth), "--cert-dir", str(image.registry.ca_dir)]
        pulled = podman.podman([*argv, image.reference], env=env)
        leaks.output(pulled.stdout, pulled.stderr)
        assert pulled.returncode == 0, pulled.stderr
        inspected = podman.podman(["image", "inspect", image.reference], env=env)
        found = json.loads(inspected.stdout)[0]
        assert found["Digest"] == image.digest
        assert found["Id"] == image.config_digest.split(":", 1)[1]
        leaks.folders.append(podman.root)


class TestBearerTokensAreNotLogins:
    def test_a_valid_scoped_token_fails_as_identity_token_and_as_password(
        self, node_world: NodeWorld
    ) -> None:
        """Why the daemon hands runtimes no bearer token: skopeo runs the realm's token flow
        with what it is given, and the realm takes a registry token neither as a refresh
        token (`Username: "<token>"`) nor as a password - although the registry accepts it."""
        registry = node_world.token_registry
        token = registry.token_server.issue_token(ALICE, ["repository:team/app:pull"])
        assert _bearer_get(registry, "/v2/team/app/manifests/v1", token) == 200
        for given in ({"identity_token": token}, {"username": ALICE, "password": token}):
            with pytest.raises(HarnessError, match=r"unauthorized|401"):
                inspect_raw(registry, "team/app", "v1", **given)


def _bearer_get(registry: TokenAuthRegistry, path: str, token: str) -> int:
    context = ssl.create_default_context(cadata=registry.ca_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", registry.port, context=context, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
