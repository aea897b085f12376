"""Sidecar integration world: the shared token registry behind a front door, a real broker.

The broker (a `pullbroker serve` process) lets nodes pull from records named `sidecar-*`
only; `sidecar-main` points at the front door with alice's credential (pull on team/*),
and `forbidden` points at the registry directly, so its images are denied by policy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.broker_process import BrokerProcess
from tests.harness.certs import TestCA
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages, seed_image
from tests.integration.sidecar.frontdoor import FrontDoor
from tests.integration.sidecar.world import SidecarWorld


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    token_registry: TokenAuthRegistry,
    pushed_images: StandardImages,
    test_ca: TestCA,
) -> Iterator[SidecarWorld]:
    """One broker process and front door per module; the broker's home is never shared."""
    seed_dir = tmp_path_factory.mktemp("sidecar-seed")
    # Own repositories only: the session registry is shared with other test packages.
    second = seed_image(token_registry, seed_dir, "team/sidecar", "v2", [4096, 8192])
    door = FrontDoor(token_registry, test_ca).start()
    broker = BrokerProcess(
        tmp_path_factory.mktemp("sidecar-broker") / "home", node_registries=("sidecar-*",)
    )
    try:
        broker.start()
        password = token_registry.users[ALICE]
        broker.register("sidecar-main", door.url, test_ca.pem, ALICE, password)
        broker.register("forbidden", token_registry.url, test_ca.pem, ALICE, password)
        yield SidecarWorld(broker, door, token_registry, pushed_images, second, seed_dir)
    finally:
        broker.stop()
        door.stop()


@pytest.fixture
def door(world: SidecarWorld) -> Iterator[FrontDoor]:
    """The front door, with its tricks switched off again after the test."""
    world.door.release.clear()
    try:
        yield world.door
    finally:
        world.door.redirect_to = None
        world.door.revoke_first_token = False
        world.door.revoked = None
        world.door.rejected = 0
        world.door.blob_authorizations.clear()
        world.door.stall_blobs = False
        world.door.release.set()
        world.door.stalled.clear()
