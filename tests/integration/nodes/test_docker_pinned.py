"""dockerd and digests: `--dest docker-daemon` pins the image as `repo:sha256-<hex>`, and
`pull --compose FILE` pre-pulls every service's image into dockerd.

dockerd (the classic image store of 20.10) records a RepoDigest only when it pulls from a
registry itself: a loaded image has none and cannot be tagged with a digest, so
`repo@sha256:<hex>` does not name it. These tests prove both that limit and the tag that
stands in for the digest, as the README tells users to reference it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.runtimes import Dockerd
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


def _sidecar(world: NodeWorld, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pullbroker_sidecar.cli", "pull", *args]
    argv += ["--home", str(world.home), "--output", "json", "--quiet"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)


def _image_id(dockerd: Dockerd, name: str) -> str | None:
    inspected = dockerd.docker(["image", "inspect", name])
    if inspected.returncode != 0:
        return None
    found: str = json.loads(inspected.stdout)[0]["Id"]
    return found


def _pinned(world: NodeWorld, repository: str, digest: str) -> str:
    return f"{world.door.host}/{repository}:{digest.replace(':', '-', 1)}"


class TestPinnedTag:
    def test_digest_pull_is_run_by_its_pinned_tag(
        self, node_world: NodeWorld, dockerd: Dockerd, leaks: LeakCheck
    ) -> None:
        """A pull by digest tags the image `repo:sha256-<hex>`: dockerd inspects it (and
        `docker create` accepts it) by that name, while `repo@sha256:<hex>` stays unknown."""
        image = node_world.seed("team/nodes-pinned", "v1", [2048, 1024])
        by_digest = f"{node_world.door.host}/{image.repository}@{image.digest}"
        result = _sidecar(node_world, by_digest, "--dest", f"docker-daemon:{dockerd.host}")
        leaks.output(result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        pinned = _pinned(node_world, image.repository, image.digest)
        assert document["pinned"] == [pinned]
        assert document["name"] == pinned
        assert f"run {pinned}, not {by_digest}" in result.stderr
        assert _image_id(dockerd, pinned) == document["image_id"]
        # What dockerd cannot do, whoever asks: no RepoDigest for a loaded image.
        assert _image_id(dockerd, by_digest) is None
        refused = dockerd.docker(["tag", pinned, by_digest])
        assert refused.returncode != 0
        assert "digest" in refused.stderr
        created = dockerd.docker(["create", "--pull=never", pinned, "/bin/true"])
        assert created.returncode == 0, created.stderr
        dockerd.docker(["rm", created.stdout.strip()])

    def test_tag_pull_is_also_pinned(
        self, node_world: NodeWorld, dockerd: Dockerd, leaks: LeakCheck
    ) -> None:
        """A pull by tag keeps the tag and adds the pinned tag of the manifest it got."""
        image = node_world.seed("team/nodes-pinned-tag", "v2", [1024])
        reference = node_world.via_door(image.repository, image.tag)
        result = _sidecar(node_world, reference, "--dest", f"docker-daemon:{dockerd.host}")
        leaks.output(result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        pinned = _pinned(node_world, image.repository, image.digest)
        assert document["name"] == reference
        assert document["pinned"] == [pinned]
        assert _image_id(dockerd, reference) == _image_id(dockerd, pinned) == document["image_id"]


class TestCompose:
    def test_every_service_image_is_pulled(
        self,
        node_world: NodeWorld,
        dockerd: Dockerd,
        tmp_path: Path,
        leaks: LeakCheck,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Two services (one image from `${VAR:-default}`, one by its pinned tag), a
        `build:`-only service skipped, a repeated image pulled once: both land in dockerd."""
        web = node_world.seed("team/nodes-compose-web", "v1", [1536])
        worker = node_world.seed("team/nodes-compose-worker", "v1", [1024, 512])
        web_ref = node_world.via_door(web.repository, web.tag)
        worker_pinned = _pinned(node_world, worker.repository, worker.digest)
        compose = tmp_path / "compose.yaml"
        compose.write_text(
            "services:\n"
            "  web:\n"
            "    image: ${WEB_IMAGE:-" + web_ref + "}\n"
            "  web-again:\n"
            "    image: " + web_ref + "\n"
            "  worker:\n"
            "    image: ${REGISTRY}/" + worker.repository + ":${WORKER_TAG}\n"
            "  local:\n"
            "    build: ./local\n"
        )
        (tmp_path / ".env").write_text(f"WORKER_TAG={worker_pinned.rsplit(':', 1)[1]}\n")
        monkeypatch.setenv("REGISTRY", node_world.door.host)
        monkeypatch.delenv("WEB_IMAGE", raising=False)
        result = _sidecar(
            node_world, "--compose", str(compose), "--dest", f"docker-daemon:{dockerd.host}"
        )
        leaks.output(result.stdout, result.stderr)
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [d["services"] for d in lines] == [["web", "web-again"], ["worker"]]
        assert "local" in result.stderr
        assert _image_id(dockerd, web_ref) == lines[0]["image_id"]
        assert _image_id(dockerd, worker_pinned) == lines[1]["image_id"]

    def test_one_failure_fails_the_run_after_trying_all(
        self, node_world: NodeWorld, dockerd: Dockerd, tmp_path: Path, leaks: LeakCheck
    ) -> None:
        """A repository outside the policy fails its line; the next image is still pulled
        and the exit status is 1."""
        ok = node_world.seed("team/nodes-compose-after", "v1", [1024])
        ok_ref = node_world.via_door(ok.repository, ok.tag)
        denied = node_world.via_door("team/other", "v1")
        compose = tmp_path / "compose.yaml"
        compose.write_text(f"services:\n  a: {{image: '{denied}'}}\n  b: {{image: '{ok_ref}'}}\n")
        result = _sidecar(
            node_world, "--compose", str(compose), "--dest", f"docker-daemon:{dockerd.host}"
        )
        leaks.output(result.stdout, result.stderr)
        assert result.returncode == 1
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines[0]["image"] == denied
        assert "policy" in lines[0]["error"]
        assert lines[1]["image_id"] == _image_id(dockerd, ok_ref)
        assert "1 of 2 images" in result.stderr
