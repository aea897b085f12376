"""Node fixtures: the registries and broker (world.py), real runtimes, the sidecar daemon.

Runtimes are started once per package on private sockets and folders; a runtime that is
not installed skips its tests with the package to install (a runtime that is installed but
fails to start is an error, not a skip). After every test, the node's folders (sidecar
home, runtime storage, docker config, auth files) and the daemon's log are searched for
the registries' long-lived passwords and for every token seen on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.broker_process import BrokerProcess
from tests.harness.certs import TestCA
from tests.harness.registry import TokenAuthRegistry
from tests.harness.runtimes import (
    DOCKERD_HINT,
    PODMAN_HINT,
    Containerd,
    Dockerd,
    Podman,
    missing,
    remove_tree,
    short_dir,
)
from tests.harness.sidecar import SidecarDaemon, make_helper_bin
from tests.harness.standard import ALICE, StandardImages
from tests.integration.nodes.world import (
    CAROL,
    DAVE,
    LeakCheck,
    NodeWorld,
    RecordingDoor,
    push_basic,
    restrict_policy,
    scan_for_leaks,
    start_basic,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="package")
def node_world(
    tmp_path_factory: pytest.TempPathFactory,
    token_registry: TokenAuthRegistry,
    pushed_images: StandardImages,
    test_ca: TestCA,
) -> Iterator[NodeWorld]:
    """One broker, the token registry behind a front door, two Basic-only registries."""
    seed_dir = tmp_path_factory.mktemp("nodes-seed")
    door = RecordingDoor(token_registry, test_ca)
    door.start()
    basic = start_basic(tmp_path_factory.mktemp("nodes-basic"), test_ca, CAROL)
    basic_b = start_basic(tmp_path_factory.mktemp("nodes-basic-b"), test_ca, DAVE)
    broker = BrokerProcess(tmp_path_factory.mktemp("nodes-broker") / "home")
    try:
        basic_app = push_basic(basic, CAROL, seed_dir, "team/app", "v1")
        basic_other = push_basic(basic_b, DAVE, seed_dir, "team/other", "v1")
        broker.start()
        password = token_registry.users[ALICE]
        broker.register("nodes-token", door.url, test_ca.pem, ALICE, password)
        broker.register("nodes-basic", basic.url, test_ca.pem, CAROL, basic.users[CAROL],
                 passthrough=True)  # fmt: skip
        broker.register("nodes-basic-b", basic_b.url, test_ca.pem, DAVE, basic_b.users[DAVE],
                 passthrough=True)  # fmt: skip
        restrict_policy(broker, basic_other.reference)
        yield NodeWorld(
            broker, door, token_registry, basic, basic_b, pushed_images.app, basic_app,
            basic_other, seed_dir,
        )  # fmt: skip
    finally:
        broker.stop()
        basic.stop()
        basic_b.stop()
        door.stop()


@pytest.fixture(scope="package")
def node_dir() -> Iterator[Path]:
    """A short /tmp folder for sockets, helper shims and runtime storage."""
    folder = short_dir("node")
    try:
        yield folder
    finally:
        remove_tree(folder)


@pytest.fixture(scope="package")
def helper_bin(node_dir: Path) -> Path:
    """`docker-credential-pullbroker` and `pullbroker-credential-provider` on a PATH folder."""
    return make_helper_bin(node_dir / "bin")


@pytest.fixture(scope="package")
def daemon(node_world: NodeWorld, node_dir: Path) -> Iterator[SidecarDaemon]:
    """The node daemon, told which images the runtimes pull through the docker helper."""
    images = [
        node_world.basic_app.reference,
        node_world.basic_other.reference,
        node_world.via_door("team/other", "v1"),
    ]
    sidecar = SidecarDaemon(node_world.home, node_dir / "sidecar.sock", images).start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


@pytest.fixture(scope="package")
def dockerd(node_dir: Path) -> Iterator[Dockerd]:
    """dockerd 20.10 on a private socket (config from REAL_COMPONENTS.md)."""
    absent = missing("dockerd", "docker", "containerd", "runc")
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed: {DOCKERD_HINT} (make debs installs it)")
    root = node_dir / "docker"
    root.mkdir()
    runtime = Dockerd(root).start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="package")
def containerd(node_dir: Path) -> Iterator[Containerd]:
    """containerd 1.6 with its own root, state and socket."""
    absent = missing("containerd", "ctr")
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed: {DOCKERD_HINT} (make debs installs it)")
    root = node_dir / "ctrd"
    root.mkdir()
    runtime = Containerd(root).start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def podman(node_dir: Path) -> Iterator[Podman]:
    """podman with fresh --root/--runroot storage."""
    absent = missing("podman")
    if absent:
        pytest.fail(f"podman not installed: {PODMAN_HINT} (make debs installs it)")
    root = short_dir("podman")
    runtime = Podman(root)
    try:
        yield runtime
    finally:
        runtime.stop()
        remove_tree(root)


@pytest.fixture(autouse=True)
def leaks(node_world: NodeWorld, node_dir: Path) -> Iterator[LeakCheck]:
    """After every test: no long-lived password or token seen on the wire is on the node's
    disk (home, runtime storage, docker config, auth files, daemon logs) or in the outputs
    the test recorded; tests add their own secrets and folders."""
    check = LeakCheck(folders=[node_world.home, node_dir])
    yield check
    needles = [*node_world.long_lived(), *node_world.tokens_seen(), *check.secrets]
    assert scan_for_leaks(needles, check.folders, check.outputs) == []
