"""`pull --dest` beyond oci: docker-archive files, containerd, the shared store, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.images import build_image, push_image
from tests.harness.runtimes import Containerd, Dockerd
from tests.harness.skopeo import run_skopeo
from tests.harness.standard import PUSHER
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _pull_argv(world: NodeWorld, image: str, dest: str, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull", image, "--dest", dest]
    return [*argv, "--home", str(world.home), "--output", "json", "--quiet", *extra]


def _pull(
    world: NodeWorld, image: str, dest: str, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    result = subprocess.run(
        _pull_argv(world, image, dest, *extra),
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _push_sharing(world: NodeWorld, folder: Path, sizes: list[int], repository: str) -> str:
    """Push an image whose first layer is the same bytes in every call (same tag and seed)."""
    image = build_image(folder, "shared", sizes, seed=4242)
    password = world.token_registry.users[PUSHER]
    push_image(image, world.token_registry, repository, "v1", username=PUSHER, password=password)
    return image.manifests[0].layers[0].digest


class TestDockerArchive:
    def test_archive_is_read_by_skopeo_and_loaded_by_docker(
        self, node_world: NodeWorld, dockerd: Dockerd, tmp_path: Path, leaks: LeakCheck
    ) -> None:
        """docker-archive:FILE holds the pulled image: skopeo reads it, `docker load` loads it."""
        image = node_world.seed("team/nodes-archive", "v1", [2048, 1024])
        reference = node_world.via_door(image.repository, image.tag)
        archive = tmp_path / "app.tar"
        document = _pull(node_world, reference, f"docker-archive:{archive}")
        assert document["dest"] == f"docker-archive:{archive}"
        inspect = ["inspect", f"docker-archive:{archive}"]
        inspected = json.loads(run_skopeo(inspect, what="inspect the archive").stdout)
        assert inspected["Layers"] == [layer.diff_id for layer in image.image.layers]
        loaded = dockerd.docker(["load", "--input", str(archive)])
        assert loaded.returncode == 0, loaded.stderr
        assert reference in loaded.stdout
        found = json.loads(dockerd.docker(["image", "inspect", reference]).stdout)[0]
        assert found["Id"] == image.image.manifests[0].config_digest
        leaks.folders.append(tmp_path)


class TestNodeStore:
    def test_second_image_downloads_only_new_layers(
        self, node_world: NodeWorld, tmp_path: Path, leaks: LeakCheck
    ) -> None:
        """Two images sharing a layer: the second pull fetches its config and new layer only."""
        shared = _push_sharing(node_world, tmp_path / "a", [300_000], "team/nodes-share-a")
        _push_sharing(node_world, tmp_path / "b", [300_000, 50_000], "team/nodes-share-b")
        store = tmp_path / "store"
        first = _pull(
            node_world, node_world.via_door("team/nodes-share-a", "v1"),
            f"docker-archive:{tmp_path / 'a.tar'}", "--store", str(store),
        )  # fmt: skip
        second = _pull(
            node_world, node_world.via_door("team/nodes-share-b", "v1"),
            f"docker-archive:{tmp_path / 'b.tar'}", "--store", str(store),
        )  # fmt: skip
        assert first["fetched"] == 2  # config + layer
        assert second["fetched"] == 2  # config + the new layer; the shared one was stored
        assert (store / "blobs" / "sha256" / shared.split(":")[1]).is_file()
        leaks.folders.append(tmp_path)

    def test_interrupted_pull_resumes_with_a_range_request(
        self, node_world: NodeWorld, tmp_path: Path, leaks: LeakCheck
    ) -> None:
        """SIGINT mid-blob keeps the bytes in the store; the next pull asks only for the rest."""
        image = node_world.seed("team/nodes-resume", "v1", [6 * MIB])
        layer = image.layer_digests[0]
        reference = node_world.via_door(image.repository, image.tag)
        store = tmp_path / "store"
        door = node_world.door
        door.release.clear()
        door.stall_blobs = True
        argv = _pull_argv(node_world, reference, f"docker-archive:{tmp_path / 'r.tar'}")
        proc = subprocess.Popen(
            [*argv, "--store", str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert door.stalled.wait(timeout=60), "the pull never reached a blob"
            partial = store / "partial" / layer.replace(":", "-")
            _wait_for_size(partial, 2 * MIB)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            door.stall_blobs = False
            door.release.set()
            door.stalled.clear()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130
        assert "keeps the bytes downloaded so far" in stderr
        kept = partial.stat().st_size
        assert 0 < kept < 6 * MIB
        door.ranges.clear()
        document = _pull(node_world, reference, f"docker-archive:{tmp_path / 'r.tar'}",
                         "--store", str(store))  # fmt: skip
        assert f"bytes={kept}-" in door.ranges
        assert not partial.exists()
        stored = store / "blobs" / "sha256" / layer.split(":")[1]
        assert stored.stat().st_size == image.image.layers[0].size
        assert document["digest"] == image.digest
        leaks.folders.append(tmp_path)


class TestContainerd:
    def test_import_shows_the_image_with_its_digest(
        self, node_world: NodeWorld, containerd: Containerd, leaks: LeakCheck
    ) -> None:
        """`--dest containerd:NS` imports the image; `ctr images ls` names it with its digest."""
        image = node_world.seed("team/nodes-containerd", "v1", [4096])
        reference = node_world.via_door(image.repository, image.tag)
        env = _containerd_env(containerd)
        document = _pull(node_world, reference, "containerd:pbtest", env=env)
        assert document["dest"] == "containerd:pbtest"
        listed = containerd.ctr(["images", "ls"], namespace="pbtest")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[1:]}
        assert rows[reference] == image.digest
        check = containerd.ctr(["images", "check", f"name=={reference}"], namespace="pbtest")
        assert "complete" in check.stdout

    def test_other_platform_is_imported_without_unpacking(
        self, node_world: NodeWorld, containerd: Containerd, leaks: LeakCheck
    ) -> None:
        """The arm64 manifest of a two-platform index is imported under its own digest."""
        multi = node_world.via_door("team/multi", "v1")
        env = _containerd_env(containerd)
        document = _pull(node_world, multi, "containerd:pbmulti", "--platform", "linux/arm64",
                         env=env)  # fmt: skip
        listed = containerd.ctr(["images", "ls"], namespace="pbmulti")
        rows = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[1:]}
        assert rows[multi] == document["digest"]
        assert document["platform"] == "linux/arm64"


def _containerd_env(containerd: Containerd) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    env["CONTAINERD_ADDRESS"] = str(containerd.socket)
    return env


def _wait_for_size(path: Path, size: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {size} bytes")
