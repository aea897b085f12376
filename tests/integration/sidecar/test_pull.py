"""`pullbroker-sidecar pull` against the real registry and a real broker; skopeo/umoci read back."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.canary import find_in_text, find_in_tree
from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer
from tests.harness.process import require_tool
from tests.harness.sidecar import run_sidecar
from tests.harness.skopeo import run_skopeo
from tests.harness.standard import ALICE
from tests.integration.sidecar.frontdoor import FrontDoor
from tests.integration.sidecar.world import SidecarWorld

pytestmark = pytest.mark.integration

REF_NAME = "org.opencontainers.image.ref.name"


def _pull(
    world: SidecarWorld, image: str, dest: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_sidecar(["pull", image, "--dest", f"oci:{dest}", *extra], world.home)


def _pull_ok(world: SidecarWorld, image: str, dest: Path, *extra: str) -> dict[str, Any]:
    result = _pull(world, image, dest, "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _skopeo_inspect(dest: Path, tag: str) -> dict[str, Any]:
    out = run_skopeo(["inspect", f"oci:{dest}:{tag}"], what="inspect layout").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def _assert_only_verified_blobs(dest: Path) -> None:
    """Every blob file is named by its content's hash; no temp file anywhere."""
    for path in (dest / "blobs").rglob("*"):
        if path.is_file():
            assert path.parent.name == "sha256", path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
    leftovers = [p.name for p in dest.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def _refs(dest: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((dest / "index.json").read_text())
    return {m["annotations"][REF_NAME]: m for m in index["manifests"]}


class TestPull:
    def test_pull_writes_a_layout_skopeo_and_umoci_read(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """team/app:v1 lands as oci:DIR:v1 with the pushed digest; skopeo and umoci read it."""
        app = world.images.app
        dest = tmp_path / "app"
        result = _pull_ok(world, world.via_door(app), dest)
        assert result["digest"] == app.digest
        assert result["platform"] == "linux/amd64"
        assert result["layers"] == 2
        assert result["dest"] == f"oci:{dest}"
        assert _skopeo_inspect(dest, "v1")["Digest"] == app.digest
        listed = subprocess.run(
            [require_tool("umoci"), "ls", "--layout", str(dest)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert listed.stdout.split() == ["v1"]
        _assert_only_verified_blobs(dest)

    def test_layout_can_be_copied_by_skopeo(self, world: SidecarWorld, tmp_path: Path) -> None:
        """skopeo copy oci:DIR:v1 reads every blob back (digests checked by skopeo)."""
        dest = tmp_path / "app"
        _pull_ok(world, world.via_door(world.images.app), dest)
        run_skopeo(["copy", f"oci:{dest}:v1", f"dir:{tmp_path / 'copy'}"], what="copy layout")
        manifest = json.loads((tmp_path / "copy" / "manifest.json").read_bytes())
        assert len(manifest["layers"]) == 2

    def test_platform_flag_picks_the_arm64_manifest(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """--platform linux/arm64 on a two-platform index stores the arm64 manifest."""
        multi = world.images.multi
        arm64 = next(m for m in multi.image.manifests if m.platform == ("linux", "arm64"))
        dest = tmp_path / "multi"
        result = _pull_ok(world, world.via_door(multi), dest, "--platform", "linux/arm64")
        assert result["digest"] == arm64.digest
        assert result["platform"] == "linux/arm64"
        assert _refs(dest)["v1"]["platform"] == {"architecture": "arm64", "os": "linux"}
        inspected = _skopeo_inspect(dest, "v1")
        assert (inspected["Digest"], inspected["Architecture"]) == (arm64.digest, "arm64")

    def test_second_tag_keeps_the_first(self, world: SidecarWorld, tmp_path: Path) -> None:
        """Pulling a v2 image into a layout holding v1 keeps both tags, each readable."""
        dest = tmp_path / "both"
        _pull_ok(world, world.via_door(world.images.app), dest)
        _pull_ok(world, world.via_door(world.second), dest)
        refs = _refs(dest)
        assert {k: v["digest"] for k, v in refs.items()} == {
            "v1": world.images.app.digest,
            "v2": world.second.digest,
        }
        assert _skopeo_inspect(dest, "v1")["Digest"] == world.images.app.digest
        assert _skopeo_inspect(dest, "v2")["Digest"] == world.second.digest

    def test_unknown_platform_fails_with_what_is_offered(
        self, world: SidecarWorld, tmp_path: Path
    ) -> None:
        """Asking for a platform the index lacks names the ones it has; nothing is tagged."""
        dest = tmp_path / "none"
        result = _pull(world, world.via_door(world.images.multi), dest, "--platform", "linux/s390x")
        assert result.returncode == 1
        assert "linux/amd64, linux/arm64" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (dest / "index.json").exists()


class TestIntegrity:
    def test_corrupt_blob_is_never_committed(self, world: SidecarWorld, tmp_path: Path) -> None:
        """A blob served with wrong bytes fails the pull naming it; nothing corrupt is stored."""
        image = world.seed("team/corrupt", "v1", [8192, 300_000])
        bad = image.layer_digests[1]
        world.registry.corrupt_blob("team/corrupt", bad)
        dest = tmp_path / "corrupt"
        result = _pull(world, world.via_door(image), dest)
        assert result.returncode == 1
        assert bad in result.stderr
        assert "failed verification" in result.stderr
        assert not (dest / "blobs" / "sha256" / bad.split(":")[1]).exists()
        assert not (dest / "index.json").exists()
        _assert_only_verified_blobs(dest)


class TestInterrupt:
    def test_ctrl_c_mid_download_leaves_nothing_partial(
        self, world: SidecarWorld, door: FrontDoor, tmp_path: Path
    ) -> None:
        """SIGINT while blob bytes are in flight: exit 130 at once, no temp or partial blob."""
        image = world.seed("team/interrupted", "v1", [200_000, 200_000])
        door.stall_blobs = True
        dest = tmp_path / "interrupted"
        argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull", world.via_door(image)]
        argv += ["--dest", f"oci:{dest}", "--home", str(world.home)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert door.stalled.wait(timeout=30), "the pull never reached a blob"
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=10)
        finally:
            door.release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130
        assert stderr.strip().splitlines()[-1].endswith("interrupted; nothing partial was kept")
        assert not (dest / "index.json").exists()
        _assert_only_verified_blobs(dest)
        stored = {p.name for p in (dest / "blobs" / "sha256").iterdir()}
        assert not stored & {d.split(":")[1] for d in image.layer_digests}


class TestTokens:
    def test_rejected_token_is_refreshed_through_the_broker(
        self, world: SidecarWorld, door: FrontDoor, tmp_path: Path
    ) -> None:
        """A 401 mid-pull makes the sidecar get a fresh token from the broker and finish."""
        image = world.seed("team/revoked", "v1", [4096, 4096, 4096])
        door.revoke_first_token = True
        result = _pull_ok(world, world.via_door(image), tmp_path / "revoked")
        assert result["digest"] == image.digest
        assert door.rejected >= 1
        tokens = set(door.blob_authorizations)
        assert door.revoked in tokens
        assert len(tokens) == 2
        # The broker minted twice at the registry's token server: the first token, then a
        # fresh one for force_refresh (its cache would otherwise hand back the revoked one);
        # the blobs rejected together shared that one refresh.
        mints = [
            r
            for r in world.registry.token_server.requests
            if r.user == ALICE and "repository:team/revoked:pull" in r.scopes and r.status == 200
        ]
        assert len(mints) == 2
        _assert_only_verified_blobs(tmp_path / "revoked")

    def test_redirect_to_another_host_carries_no_authorization(
        self, world: SidecarWorld, door: FrontDoor, test_ca: TestCA, tmp_path: Path
    ) -> None:
        """Blobs redirected to another host are fetched without the registry token."""
        storage = HTTPSServer(tls=test_ca, name="storage").start()
        try:
            door.redirect_to = storage
            image = world.seed("team/redirected", "v1", [2048, 2048])
            result = _pull_ok(world, world.via_door(image), tmp_path / "redirected")
        finally:
            storage.stop()
        assert result["digest"] == image.digest
        assert len(storage.requests) == 3  # config + two layers, all through the redirect
        assert all("authorization" not in s.headers for s in storage.requests)
        assert all(a and a.startswith("Bearer ") for a in door.blob_authorizations)
        _assert_only_verified_blobs(tmp_path / "redirected")

    def test_policy_denial_is_one_clear_line(self, world: SidecarWorld, tmp_path: Path) -> None:
        """A registry the node's policy does not grant: exit 1, one line, nothing written."""
        image = f"{world.registry.host}/team/app:v1"
        dest = tmp_path / "denied"
        result = _pull(world, image, dest)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("pullbroker-sidecar: error: pull of ")
        assert "registry 'forbidden'" in lines[0]
        assert "policy" in lines[0]
        assert not dest.exists()
        assert result.stdout == ""

    def test_no_token_or_password_on_disk(
        self, world: SidecarWorld, door: FrontDoor, tmp_path: Path
    ) -> None:
        """After pulls, neither the tokens used nor the registry password is in dest or home."""
        dest = tmp_path / "secrets"
        results = [
            _pull(world, world.via_door(world.images.app), dest, "--output", "json"),
            _pull(world, world.via_door(world.second), dest),
        ]
        assert [r.returncode for r in results] == [0, 0]
        tokens = {a.split(" ", 1)[1] for a in door.blob_authorizations if a}
        assert tokens
        needles = [*tokens, world.registry.users[ALICE]]
        serve_log = world.broker.log_path.read_text(errors="replace")
        for needle in needles:
            assert find_in_tree(dest, needle) == []
            assert find_in_tree(world.home, needle) == []
            assert not find_in_text(serve_log, needle)
            for r in results:
                assert not find_in_text(r.stdout + r.stderr, needle)
