"""Real runtimes pull with the broker's logins: skopeo through the credential helper (the
node daemon asks IssueRegistryLogin), and skopeo with a rendered pull secret as its auth file.

Each pull runs the registry's own token flow against the fixture realm in front of the real
distribution registry, which verifies the token it is then given: a pull that works proves
the realm accepted the login (a password for GAR, a refresh token for ACR).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.process import require_tool
from tests.harness.runtimes import run
from tests.harness.sidecar import DOCKER_HELPER, SidecarDaemon, node_env
from tests.integration.logins.conftest import LoginWorld

pytestmark = pytest.mark.integration

NOT_FOUND = "credentials not found in native keychain\n"


def _auth_file(folder: Path, document: dict[str, object]) -> Path:
    """An auth file only its owner may read, in a folder of its own."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "auth.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(document))
    return path


def _inspect(image: str, auth: Path, ca_dir: Path, env: dict[str, str] | None = None) -> str:
    """`skopeo inspect --authfile` of `image`: its digest (the test fails on any error)."""
    argv = [require_tool("skopeo"), "inspect", "--authfile", str(auth), "--cert-dir", str(ca_dir)]
    done = run([*argv, f"docker://{image}"], env=env)
    assert done.returncode == 0, done.stderr
    digest: str = json.loads(done.stdout)["Digest"]
    return digest


def _pull_secret(world: LoginWorld, *images: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull-secret", "--home",
            str(world.home), "-n", "apps", "--name", "pull", *images]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _auths(secret: dict[str, Any]) -> dict[str, dict[str, str]]:
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auths: dict[str, dict[str, str]] = config["auths"]
    return auths


class TestCredentialHelper:
    def test_skopeo_pulls_from_gar_with_the_access_token(
        self, login_world: LoginWorld, daemon: SidecarDaemon, helper_bin: Path, node_dir: Path
    ) -> None:
        """The helper's oauth2accesstoken login: the realm takes it as a password (Basic)."""
        google = login_world.google
        google.realm.clear()
        auth = _auth_file(node_dir / "gar", {"credHelpers": {google.registry.host: "pullbroker"}})
        env = node_env(helper_bin, daemon.socket)
        image = login_world.image(google.registry.host)
        assert _inspect(image, auth, google.registry.ca_dir, env) == google.app_digest
        assert 200 in [s.status for s in google.realm.seen("/v2/token")]
        login_world.handed_out.append(daemon.ask("image_login", image=image)["secret"])

    def test_skopeo_uses_the_acr_login_as_a_refresh_token(
        self, login_world: LoginWorld, daemon: SidecarDaemon, helper_bin: Path, node_dir: Path
    ) -> None:
        """Username "<token>" from the helper: skopeo POSTs the refresh-token grant itself."""
        azure = login_world.azure
        azure.acr.clear()
        auth = _auth_file(node_dir / "acr", {"credHelpers": {azure.registry.host: "pullbroker"}})
        env = node_env(helper_bin, daemon.socket)
        image = login_world.image(azure.registry.host)
        assert _inspect(image, auth, azure.registry.ca_dir, env) == azure.app_digest
        login_world.handed_out.append(daemon.ask("image_login", image=image)["secret"])
        grants = [(s.method, s.grant_type, s.status) for s in azure.acr.seen("/oauth2/token")]
        assert ("POST", "refresh_token", 200) in grants

    def test_registry_without_logins_is_not_found_with_the_way_out(
        self, daemon: SidecarDaemon, helper_bin: Path
    ) -> None:
        """GHCR: "not found" (runtimes go anonymous), stderr says how to pull instead."""
        argv = [str(helper_bin / DOCKER_HELPER), "get"]
        done = run(argv, stdin="ghcr.io", env=node_env(helper_bin, daemon.socket))
        assert (done.returncode, done.stdout) == (1, NOT_FOUND)
        assert "pullbroker-sidecar pull ghcr.io/team/app:v1" in done.stderr
        for advice in ("--dest docker-daemon", "podman load -i FILE"):
            assert advice in done.stderr


class TestPullSecret:
    def test_secret_logins_work_for_skopeo(self, login_world: LoginWorld, node_dir: Path) -> None:
        """A Secret for GAR and ACR (identitytoken) pulls both images as skopeo's auth file."""
        google, azure = login_world.google, login_world.azure
        images = [login_world.image(google.registry.host), login_world.image(azure.registry.host)]
        done = _pull_secret(login_world, *images)
        assert done.returncode == 0, done.stderr
        auths = _auths(yaml.safe_load(done.stdout))
        acr_entry = auths[f"{azure.registry.host}/team/app"]
        assert acr_entry["identitytoken"] == acr_entry["password"]
        assert auths[f"{google.registry.host}/team/app"]["username"] == "oauth2accesstoken"
        auth = _auth_file(node_dir / "secret", {"auths": auths})
        try:
            assert _inspect(images[0], auth, google.registry.ca_dir) == google.app_digest
            azure.acr.clear()
            assert _inspect(images[1], auth, azure.registry.ca_dir) == azure.app_digest
            grants = [s.grant_type for s in azure.acr.seen("/oauth2/token")]
            assert "refresh_token" in grants
        finally:
            auth.unlink()

    def test_watch_renders_again_and_stops_on_sigterm(self, login_world: LoginWorld) -> None:
        """--watch -o json prints one Secret per interval until SIGTERM, then exits 0."""
        image = login_world.image(login_world.google.registry.host)
        argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull-secret", "--home",
                str(login_world.home), "-n", "apps", "--name", "w", image, "--watch",
                "--max-interval", "0.5", "--output", "json"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            documents = [json.loads(proc.stdout.readline()) for _ in range(2)]
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        assert [d["metadata"]["name"] for d in documents] == ["w", "w"]
        key = f"{login_world.google.registry.host}/team/app"
        assert all(list(_auths(d)) == [key] for d in documents)

    def test_passthrough_login_is_refused(self, login_world: LoginWorld) -> None:
        """The Basic-only registry's login is its long-lived credential: no Secret, an error
        saying why and what to use, and the credential nowhere in the output."""
        done = _pull_secret(login_world, login_world.image(login_world.basic.host))
        assert done.returncode == 1
        assert done.stdout == ""
        assert "long-lived credential" in done.stderr
        assert login_world.basic.users["carol"] not in done.stderr
