"""The kubelet's pull: CRI `ImageService/PullImage` over containerd's socket, through the mirror.

containerd 1.6 runs with its CRI plugin on and `config_path` set to the hosts dir that
`mirror-config --runtime containerd` wrote; the test speaks CRI to it the way the kubelet
does (a `PullImageRequest` with the image and the pod's sandbox config, no auth: the node
holds no registry credential). The mirror authenticates upstream with broker tokens. The
package's leak check searches containerd's root (under the node folder), the hosts dir and
the sidecar's home for the registry password and every token seen on the wire.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cri import CriCallError, ImageServiceClient
from tests.harness.images import BuiltManifest
from tests.harness.mirror_world import ask
from tests.harness.runtimes import Containerd
from tests.harness.standard import ALICE, PLATFORMS, PushedImage, seed_image
from tests.integration.nodes.mirror_node import (
    BLOB_BYTES,
    REQUESTS,
    MirrorNode,
    bearer_claims,
    registry_only,
    start_cri_containerd,
    start_mirror,
    stored,
    write_hosts_dir,
)
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration

K8S_NAMESPACE = "k8s.io"  # where the CRI plugin keeps the kubelet's images


@pytest.fixture(scope="module")
def mirror(node_world: NodeWorld, node_dir: Path) -> Iterator[MirrorNode]:
    """The mirror daemon for the node's home (metrics on)."""
    node = start_mirror(node_world.home, node_dir, "mirror-cri")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def hosts_dir(node_world: NodeWorld, node_dir: Path, mirror: MirrorNode) -> Path:
    """The hosts dir `mirror-config` writes for every registry this node may pull from."""
    return write_hosts_dir(node_world.home, node_dir / "cri-certs.d", mirror, node_world.door.host)


@pytest.fixture(scope="module")
def cri_containerd(node_dir: Path, hosts_dir: Path) -> Iterator[Containerd]:
    """containerd with CRI on, `config_path` = the hosts dir; root under the node folder."""
    runtime = start_cri_containerd(node_dir / "ctrd-cri", hosts_dir)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def cri(cri_containerd: Containerd) -> Iterator[ImageServiceClient]:
    """A CRI ImageService client on containerd's socket, as the kubelet dials it."""
    with ImageServiceClient(cri_containerd.socket) as client:
        yield client


def host_manifest(image: PushedImage) -> BuiltManifest:
    """The manifest containerd picks for this machine (the only one, or this platform's)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return next(m for m in image.image.manifests if m.platform in (None, ("linux", arch)))


def by_digest(world: NodeWorld, image: PushedImage) -> str:
    """`DOOR/repo@digest`: pulls name the registry by the host its broker record has."""
    return f"{world.door.host}/{image.repository}@{image.digest}"


def new_bearers(world: NodeWorld, since: int) -> list[str]:
    """The Authorization headers of blob GETs the registry saw after the first `since`."""
    return [a or "" for a in world.door.blob_authorizations[since:]]


class TestPullImage:
    """PullImage through the mirror by tag, by digest and for a two-platform index."""

    def test_pull_by_tag(
        self, node_world: NodeWorld, cri: ImageServiceClient, cri_containerd: Containerd,
        mirror: MirrorNode,
    ) -> None:  # fmt: skip
        """By tag: image_ref is the config digest, ImageStatus shows tag and repo digest,
        and every byte came through the mirror with tokens the broker's credential got."""
        image = node_world.seed("team/nodes-cri", "v1", [200_000, 3_000])
        reference = node_world.via_door(image.repository, image.tag)
        seen, before = len(node_world.door.blob_authorizations), mirror.metrics()
        image_ref = cri.pull(reference)
        assert image_ref == host_manifest(image).config_digest
        status = cri.status(reference)
        assert status is not None
        assert status.id == image_ref
        assert status.repo_tags == (reference,)
        assert status.repo_digests == (by_digest(node_world, image),)
        assert reference in cri_containerd.ctr(["images", "ls", "-q"], K8S_NAMESPACE).stdout
        # Through the mirror: it fetched the layers upstream and kept them in the node store.
        after = mirror.metrics()
        assert after.value(BLOB_BYTES, source="upstream") - before.value(
            BLOB_BYTES, source="upstream"
        ) >= sum(layer.size for layer in host_manifest(image).layers)
        assert after.value(REQUESTS, kind="manifest", status="2xx") > before.value(
            REQUESTS, kind="manifest", status="2xx"
        )
        assert all(stored(node_world.home, d) for d in image.layer_digests)
        bearers = new_bearers(node_world, seen)
        assert len(bearers) == len(image.layer_digests) + 1  # layers and config, once each
        assert {bearer_claims(b)["sub"] for b in bearers} == {ALICE}

    def test_pull_by_digest(self, node_world: NodeWorld, cri: ImageServiceClient) -> None:
        """By digest: the same image_ref as the manifest's config; the digest is recorded."""
        image = node_world.seed("team/nodes-cri-digest", "v1", [5_000])
        image_ref = cri.pull(by_digest(node_world, image))
        assert image_ref == host_manifest(image).config_digest
        status = cri.status(by_digest(node_world, image))
        assert status is not None
        assert status.id == image_ref
        assert status.repo_digests == (by_digest(node_world, image),)
        assert status.repo_tags == ()
        assert stored(node_world.home, image.layer_digests[0])

    def test_pull_two_platform_index(self, node_world: NodeWorld, cri: ImageServiceClient) -> None:
        """A two-platform index, by digest then by tag: this machine's platform, one image;
        the other platform's layers were never fetched."""
        multi = seed_image(node_world.token_registry, node_world.seed_dir, "team/nodes-cri-multi",
                           "v1", [4_096], PLATFORMS)  # fmt: skip
        assert multi.image.index_digest == multi.digest
        mine = host_manifest(multi)
        pinned = cri.pull(by_digest(node_world, multi))
        assert pinned == mine.config_digest
        tagged = cri.pull(node_world.via_door(multi.repository, multi.tag))
        assert tagged == pinned
        status = cri.status(by_digest(node_world, multi))
        assert status is not None
        assert status.repo_digests == (by_digest(node_world, multi),)
        assert status.repo_tags == (node_world.via_door(multi.repository, multi.tag),)
        assert all(stored(node_world.home, layer.digest) for layer in mine.layers)
        others = [m for m in multi.image.manifests if m is not mine]
        assert others
        assert not any(stored(node_world.home, layer.digest) for m in others for layer in m.layers)

    def test_remove_then_list(self, node_world: NodeWorld, cri: ImageServiceClient) -> None:
        """RemoveImage forgets a pulled image: ListImages and ImageStatus no longer show it."""
        image = node_world.seed("team/nodes-cri-remove", "v1", [2_000])
        reference = node_world.via_door(image.repository, image.tag)
        image_ref = cri.pull(reference)
        assert image_ref in {listed.id for listed in cri.list()}
        cri.remove(reference)
        assert cri.status(reference) is None
        assert image_ref not in {listed.id for listed in cri.list()}


class TestWithoutTheMirror:
    """Failures that show the pull depends on the mirror and the broker's policy."""

    def test_runtime_alone_has_no_credential(
        self, node_world: NodeWorld, cri: ImageServiceClient, hosts_dir: Path, leaks: LeakCheck
    ) -> None:
        """hosts.toml straight to the registry (CA trusted): containerd can only ask for an
        anonymous token and is refused; the mirror's hosts.toml back, the same pull works."""
        image = node_world.seed("team/nodes-cri-alone", "v1", [3_000])
        reference = node_world.via_door(image.repository, image.tag)
        tokens = node_world.token_registry.token_server
        asked = len(tokens.requests)
        direct = registry_only(hosts_dir, node_world.door.host, node_world.token_registry.ca_pem)
        with direct, pytest.raises(CriCallError) as refused:
            cri.pull(reference)
        leaks.output(refused.value.details)
        assert "pull access denied" in refused.value.details
        assert "insufficient_scope" in refused.value.details
        scope = f"repository:{image.repository}:pull"
        by_containerd = [r for r in tokens.requests[asked:] if scope in r.scopes]
        assert by_containerd
        assert all(r.user is None and not r.had_authorization for r in by_containerd)
        assert cri.status(reference) is None
        assert cri.pull(reference) == host_manifest(image).config_digest

    def test_repository_outside_policy(
        self,
        node_world: NodeWorld,
        cri: ImageServiceClient,
        mirror: MirrorNode,
        leaks: LeakCheck,
    ) -> None:
        """team/other is outside the node's policy: PullImage fails on the mirror's 403, and
        the error the kubelet gets carries the broker's reason (containerd resolves with HEAD,
        whose answer has no body: the mirror puts the reason in the status line); a GET gets
        the OCI error body, and the mirror logs the refusal."""
        reference = node_world.via_door("team/other", "v1")
        with pytest.raises(CriCallError) as refused:
            cri.pull(reference)
        assert f"pulling from host {mirror.address} failed" in refused.value.details
        leaks.output(refused.value.details)  # the status line carries broker text now
        assert "403 Forbidden: the broker refused: " in refused.value.details
        assert "team/other" in refused.value.details.split("403 Forbidden", 1)[1]
        logged = mirror.events("mirror_refused")
        assert any(
            e["code"] == "DENIED" and e["path"].startswith("/v2/team/other/manifests/")
            for e in logged
        )
        answer = ask(mirror.port, f"/v2/team/other/manifests/v1?ns={node_world.door.host}")
        assert answer.status == 403
        assert answer.error()["code"] == "DENIED"
        assert "the broker refused" in answer.error()["message"]
