"""One mirror daemon serves two token-auth registries, each with the broker's own record.

Besides the package's registry (record `nodes-token`, alice's credential, token service
`test-registry`), a second registry runs on another loopback port with its own token
server, signing key, issuer and user (record `nodes-second`, erin's credential).
`mirror-config` writes a hosts.toml for each host; containerd pulls a private image from
each through the same mirror, over CRI (as the kubelet) and with ctr. Each registry must
only ever see tokens its own token server issued for the credential the broker holds for
it, and neither credential may be offered to the other registry's token server. The
package's leak check also searches for the second registry's passwords and tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.certs import TestCA
from tests.harness.cri import ImageServiceClient
from tests.harness.runtimes import Containerd
from tests.harness.standard import ALICE, PUSHER
from tests.integration.nodes.mirror_node import (
    REQUESTS,
    MirrorNode,
    bearer_claims,
    start_cri_containerd,
    start_mirror,
    stored,
    write_hosts_dir,
)
from tests.integration.nodes.upstreams import TokenUpstream, start_token_upstream
from tests.integration.nodes.world import LeakCheck, NodeWorld

pytestmark = pytest.mark.integration

ERIN = "erin"
FIRST_SERVICE = "test-registry"  # tests/harness/registry.py's defaults, the package registry's
FIRST_ISSUER = "test-issuer"


@pytest.fixture(scope="module")
def second(
    node_world: NodeWorld, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
) -> Iterator[TokenUpstream]:
    """The second registry, erin's credential registered as `nodes-second`."""
    upstream = start_token_upstream(
        tmp_path_factory.mktemp("nodes-second"), test_ca, node_world.broker,
        record="nodes-second", user=ERIN, name="second-registry",
    )  # fmt: skip
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def mirror(node_world: NodeWorld, node_dir: Path, second: TokenUpstream) -> Iterator[MirrorNode]:
    """One mirror daemon for the node's home, started once both records exist."""
    node = start_mirror(node_world.home, node_dir, "mirror-two")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def hosts_dir(
    node_world: NodeWorld, node_dir: Path, mirror: MirrorNode, second: TokenUpstream
) -> Path:
    """mirror-config's hosts dir: it must hold a hosts.toml for both registries."""
    return write_hosts_dir(node_world.home, node_dir / "two-certs.d", mirror,
                           node_world.door.host, second.host)  # fmt: skip


@pytest.fixture(scope="module")
def cri_containerd(node_dir: Path, hosts_dir: Path) -> Iterator[Containerd]:
    """containerd with CRI on, `config_path` = the two-registry hosts dir; root under the
    node folder (which the leak check searches)."""
    runtime = start_cri_containerd(node_dir / "ctrd-two", hosts_dir)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def cri(cri_containerd: Containerd) -> Iterator[ImageServiceClient]:
    with ImageServiceClient(cri_containerd.socket) as client:
        yield client


@pytest.fixture
def second_leaks(leaks: LeakCheck, second: TokenUpstream) -> Iterator[LeakCheck]:
    """The package's leak check, also for the second registry's passwords and the tokens
    its door saw (read after the test body, before the package check runs)."""
    leaks.secrets.extend(second.passwords())
    yield leaks
    leaks.secrets.extend(second.tokens_seen())


def claims_since(door_authorizations: list[str | None], since: int) -> list[dict[str, object]]:
    """The claims of every bearer token a door saw after its first `since` blob GETs."""
    return [bearer_claims(a or "") for a in door_authorizations[since:]]


class TestTwoRegistries:
    """Each registry is reached through the one mirror with its own credential only."""

    def test_cri_pulls_from_each_with_its_own_tokens(
        self, node_world: NodeWorld, second: TokenUpstream, cri: ImageServiceClient,
        mirror: MirrorNode, second_leaks: LeakCheck,
    ) -> None:  # fmt: skip
        """PullImage from each registry: each door saw only tokens of its own issuer for
        its own credential; neither token server was offered the other's user."""
        first_image = node_world.seed("team/nodes-first", "v1", [20_000])
        second_image = second.seed("team/nodes-second", "v1", [30_000])
        first_seen = len(node_world.door.blob_authorizations)
        second_seen = len(second.door.blob_authorizations)
        before = mirror.metrics()
        for reference, image in (
            (node_world.via_door(first_image.repository, first_image.tag), first_image),
            (second.reference(second_image), second_image),
        ):
            assert cri.pull(reference) == image.image.manifests[0].config_digest
            assert all(stored(node_world.home, d) for d in image.layer_digests)
        served = mirror.metrics().value(REQUESTS, kind="manifest", status="2xx")
        assert served - before.value(REQUESTS, kind="manifest", status="2xx") >= 2
        first = claims_since(node_world.door.blob_authorizations, first_seen)
        theirs = claims_since(second.door.blob_authorizations, second_seen)
        assert len(first) == len(first_image.layer_digests) + 1  # layers and config
        assert len(theirs) == len(second_image.layer_digests) + 1
        assert {(c["iss"], c["aud"], c["sub"]) for c in first} == {
            (FIRST_ISSUER, FIRST_SERVICE, ALICE)
        }
        assert {(c["iss"], c["aud"], c["sub"]) for c in theirs} == {
            (second.issuer, "second-registry", ERIN)
        }
        assert_no_cross_use(node_world, second)

    def test_ctr_pulls_from_the_second_registry(
        self, second: TokenUpstream, cri_containerd: Containerd, hosts_dir: Path,
        second_leaks: LeakCheck,
    ) -> None:  # fmt: skip
        """ctr with the same hosts dir pulls the second registry's image via the mirror."""
        image = second.seed("team/nodes-second-ctr", "v1", [10_000])
        reference = second.reference(image)
        seen = len(second.door.blob_authorizations)
        done = cri_containerd.ctr(
            ["images", "pull", "--hosts-dir", str(hosts_dir), reference], namespace="two"
        )
        second_leaks.output(done.stdout, done.stderr)
        assert done.returncode == 0, done.stderr
        listed = cri_containerd.ctr(["images", "ls"], namespace="two").stdout
        assert image.digest in listed
        tokens = claims_since(second.door.blob_authorizations, seen)
        assert tokens
        assert {c["sub"] for c in tokens} == {ERIN}


def assert_no_cross_use(world: NodeWorld, second: TokenUpstream) -> None:
    """Neither token server ever saw the other registry's user (even refused), and every
    token the second registry got was issued by its own token server."""
    first_server = world.token_registry.token_server
    assert first_server.count(user=ERIN) == 0
    assert second.token_server.count(user=ALICE) == 0
    # The pusher seeds images; every other token request must be the broker's, for erin.
    assert {r.user for r in second.token_server.requests if r.user != PUSHER} == {ERIN}
    issued = {r.jti for r in second.token_server.requests}
    seen = {bearer_claims(a or "")["jti"] for a in second.door.blob_authorizations}
    assert seen <= issued
