"""Runtimes pull private images through the node-local mirror (`run --mirror`), for real.

containerd 1.6 (`ctr images pull --hosts-dir`, hosts.toml written by `mirror-config`),
podman and skopeo (registries.conf mirror) pull from the token-auth registry behind the
recording front door; the mirror authenticates upstream with broker tokens only. The
package's leak check then searches containerd's root, the hosts dir, the sidecar's home
and logs (and podman's storage, added here) for the registry password and every token.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.certs import TestCA
from tests.harness.mirror_world import ask, free_port, mirror_config, mirror_daemon
from tests.harness.runtimes import Containerd, Podman, run
from tests.harness.scrape import Scrape, scrape
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration


METRICS_PORT: dict[str, int] = {}


@pytest.fixture(scope="module")
def mirror(node_world: NodeWorld, node_dir: Path) -> Iterator[int]:
    """The mirror daemon for the node's home (metrics on); its port."""
    METRICS_PORT["port"] = free_port()
    daemon, port = mirror_daemon(
        node_world.home, node_dir, "mirror", "--metrics-listen", f"127.0.0.1:{METRICS_PORT['port']}"
    )
    try:
        yield port
    finally:
        daemon.stop()


def mirror_metrics() -> Scrape:
    return scrape(f"http://127.0.0.1:{METRICS_PORT['port']}/metrics")


@pytest.fixture(scope="module")
def hosts_dir(node_world: NodeWorld, node_dir: Path, mirror: int) -> Path:
    """containerd's hosts dir, written by `mirror-config` for every registry host the broker
    says this node may pull from (ListPullableRegistries over the node's identity)."""
    folder = node_dir / "certs.d"
    out = mirror_config("--runtime", "containerd", "--hosts-dir", str(folder), "--mirror",
                        f"127.0.0.1:{mirror}", "--home", str(node_world.home))  # fmt: skip
    assert (folder / node_world.door.host / "hosts.toml").exists(), out
    return folder


def stored(world: NodeWorld, digest: str) -> bool:
    return (world.home / "store" / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()


def ctr_pull(
    containerd: Containerd, hosts_dir: Path, reference: str
) -> subprocess.CompletedProcess[str]:
    return containerd.ctr(
        ["images", "pull", "--hosts-dir", str(hosts_dir), reference], namespace="mirror"
    )


def forget(containerd: Containerd, reference: str) -> None:
    """Remove the image and every content blob from containerd."""
    containerd.ctr(["images", "rm", reference], namespace="mirror")
    listed = containerd.ctr(["content", "ls", "-q"], namespace="mirror").stdout.split()
    if listed:
        containerd.ctr(["content", "rm", *listed], namespace="mirror")


class TestContainerd:
    """containerd pulls private images through the mirror; the node store serves repeats."""

    def test_pull_by_tag_then_again_from_the_store(
        self, node_world: NodeWorld, containerd: Containerd, hosts_dir: Path, leaks: LeakCheck
    ) -> None:
        """A tag pull downloads each blob once; after containerd forgot it, zero blob GETs."""
        image = node_world.seed("team/nodes-mirror", "v1", [300_000, 5_000])
        reference = node_world.via_door(image.repository, image.tag)
        before = len(node_world.door.blob_authorizations)
        metrics_before = mirror_metrics()
        first = ctr_pull(containerd, hosts_dir, reference)
        leaks.output(first.stdout, first.stderr)
        assert first.returncode == 0, first.stderr
        after_first = mirror_metrics()
        fetched = len(node_world.door.blob_authorizations) - before
        assert fetched == len(image.layer_digests) + 1  # layers and config, once each
        assert all(stored(node_world, d) for d in image.layer_digests)
        forget(containerd, reference)
        second = ctr_pull(containerd, hosts_dir, reference)
        assert second.returncode == 0, second.stderr
        assert len(node_world.door.blob_authorizations) - before == fetched
        listed = containerd.ctr(["images", "ls"], namespace="mirror").stdout
        assert image.digest in listed
        # The mirror's metrics tell the same story: the first pull's layer bytes came from
        # upstream, the second pull made no upstream download (whatever containerd asked for
        # again came from the store; `python -m bench mirror` checks the full 256 MiB case).
        after_second = mirror_metrics()
        bytes_total = "pullbroker_sidecar_mirror_blob_bytes_total"
        upstream_first = after_first.value(bytes_total, source="upstream") - metrics_before.value(
            bytes_total, source="upstream"
        )
        upstream_second = after_second.value(bytes_total, source="upstream") - after_first.value(
            bytes_total, source="upstream"
        )
        assert upstream_first > 300_000  # the 300 kB layer (and the rest) came from upstream
        assert upstream_second == 0
        blob_requests = "pullbroker_sidecar_mirror_requests_total"
        assert after_second.value(blob_requests, kind="blob", status="2xx") > 0
        assert after_second.value(blob_requests, kind="manifest", status="2xx") > 0
        assert after_second.sum("pullbroker_sidecar_mirror_request_seconds_count") > 0

    def test_pull_index_by_digest(
        self, node_world: NodeWorld, containerd: Containerd, hosts_dir: Path
    ) -> None:
        """A two-platform index by digest: containerd gets this host's platform."""
        multi = node_world.seed("team/nodes-multi", "v1", [4096])
        reference = f"{node_world.door.host}/{multi.repository}@{multi.digest}"
        done = ctr_pull(containerd, hosts_dir, reference)
        assert done.returncode == 0, done.stderr
        assert multi.digest in containerd.ctr(["images", "ls"], namespace="mirror").stdout

    def test_repository_outside_policy_is_refused(
        self, node_world: NodeWorld, containerd: Containerd, hosts_dir: Path, mirror: int
    ) -> None:
        """team/other is outside the node's policy: 403 DENIED with the broker's reason."""
        reference = node_world.via_door("team/other", "v1")
        assert ctr_pull(containerd, hosts_dir, reference).returncode != 0
        answer = ask(mirror, f"/v2/team/other/manifests/v1?ns={node_world.door.host}")
        assert answer.status == 403
        assert answer.error()["code"] == "DENIED"
        assert "broker refused" in answer.error()["message"]

    def test_blob_not_matching_its_digest_fails_and_stores_nothing(
        self, node_world: NodeWorld, containerd: Containerd, hosts_dir: Path, mirror: int
    ) -> None:
        """A registry serving other bytes under a layer's digest: the runtime's transfer is
        cut short, containerd fails, the node store holds nothing for that digest."""
        image = node_world.seed("team/nodes-hostile", "v1", [200_000])
        layer = image.layer_digests[0]
        blob = node_world.token_registry.blob_path(layer)
        blob.write_bytes(os.urandom(blob.stat().st_size))
        reference = node_world.via_door(image.repository, image.tag)
        assert ctr_pull(containerd, hosts_dir, reference).returncode != 0
        answer = ask(mirror, f"/v2/{image.repository}/blobs/{layer}?ns={node_world.door.host}")
        assert answer.status == 200
        assert not answer.complete
        assert not stored(node_world, layer)


class TestCoalescing:
    """Concurrent requests for one blob make one upstream download."""

    def test_concurrent_requests_one_download(self, node_world: NodeWorld, mirror: int) -> None:
        """Four clients at once get the whole, verified blob; the registry saw one GET."""
        image = node_world.seed("team/nodes-coalesce", "v1", [8_000_000])
        layer = image.layer_digests[0]
        path = f"/v2/{image.repository}/blobs/{layer}?ns={node_world.door.host}"
        before = len(node_world.door.blob_authorizations)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: ask(mirror, path), range(4)))
        for answer in answers:
            assert answer.status == 200
            assert answer.complete
            assert "sha256:" + hashlib.sha256(answer.body).hexdigest() == layer
            assert answer.headers["docker-content-digest"] == layer
        assert len(node_world.door.blob_authorizations) - before == 1
        ranged = ask(mirror, path, headers={"Range": "bytes=10-19"})
        assert ranged.status == 206
        assert ranged.headers["content-range"] == f"bytes 10-19/{len(answers[0].body)}"
        assert ranged.body == answers[0].body[10:20]
        assert len(node_world.door.blob_authorizations) - before == 1


class TestPodmanSkopeo:
    """podman and skopeo pull through a registries.conf mirror (host as path prefix)."""

    def test_podman_and_skopeo_pull_through_the_mirror(
        self, node_world: NodeWorld, podman: Podman, mirror: int, node_dir: Path, leaks: LeakCheck
    ) -> None:
        """podman stores the image, skopeo copies it to a layout, both via the mirror."""
        conf = node_dir / "registries-mirror.conf"
        mirror_config("--runtime", "podman", "--registries-conf", str(conf), "--mirror",
                      f"127.0.0.1:{mirror}", "--host", node_world.door.host,
                      "--no-broker")  # fmt: skip
        leaks.folders.append(podman.root)
        env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
        reference = node_world.via_door("team/app", "v1")
        pulled = podman.podman(["pull", reference], env=env)
        leaks.output(pulled.stdout, pulled.stderr)
        assert pulled.returncode == 0, pulled.stderr
        assert node_world.app.digest in podman.podman(["images", "--digests"], env=env).stdout
        layout = node_dir / "skopeo-layout"
        copied = run(["skopeo", "--registries-conf", str(conf), "copy", f"docker://{reference}",
                      f"oci:{layout}:v1"])  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        assert (layout / "index.json").exists()


class TestRefusals:
    """What the mirror answers when it must not or cannot serve."""

    def test_local_user_not_allowed(self, mirror: int) -> None:
        """A client owned by uid 65534 gets 403 DENIED naming its uid."""
        done = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{mirror}/v2/"],
            user=65534, group=65534, extra_groups=[], capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        body, _, status = done.stdout.rpartition("\n")
        assert status == "403"
        assert "local user 65534" in body
        assert ask(mirror, "/v2/").status == 200  # root is served

    def test_upstream_down(self, node_world: NodeWorld, mirror: int, test_ca: TestCA) -> None:
        """A registry nothing answers on: 503 UNAVAILABLE with Retry-After."""
        dead = f"127.0.0.1:{free_port()}"
        node_world.broker.register("nodes-dead", f"https://{dead}", test_ca.pem, "u", "p-unused")
        answer = ask(mirror, f"/v2/team/app/manifests/v1?ns={dead}")
        assert answer.status == 503
        assert answer.error()["code"] == "UNAVAILABLE"
        assert int(answer.headers["retry-after"]) > 0

    def test_broker_down(self, node_world: NodeWorld, node_dir: Path) -> None:
        """No broker answers: 503 with Retry-After, after the mirror's broker wait."""
        daemon, port = mirror_daemon(
            node_world.home, node_dir, "mirror-nobroker", "--broker", f"127.0.0.1:{free_port()}"
        )
        try:
            answer = ask(port, f"/v2/team/app/manifests/v1?ns={node_world.door.host}")
        finally:
            daemon.stop()
        assert answer.status == 503
        assert answer.error()["code"] == "UNAVAILABLE"
        assert int(answer.headers["retry-after"]) > 0
