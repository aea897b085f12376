"""IssueRegistryLogin end to end: an in-process broker (broker.py) with every cloud minter,
the registries behind moto and the cloud fixtures, a Basic-only registry, and a node daemon
whose credential helper real runtimes (skopeo) use.

After every test, the node's folders (the daemon's socket folder and log, the home it shares
with the broker, auth files the test wrote) are searched for every long-lived credential the
broker holds: none may be on disk, whatever the runtimes were handed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    GoogleServiceAccount,
    RegistryKind,
)

from tests.harness.canary import new_canary
from tests.harness.images import build_image
from tests.harness.registry import HtpasswdRegistry
from tests.harness.runtimes import remove_tree, short_dir
from tests.harness.sidecar import SidecarDaemon, make_helper_bin
from tests.harness.skopeo import push_image
from tests.integration.cloud import conftest as cloud
from tests.integration.cloud.aws_world import REGISTRY_HOST, ROLE_ARN, AwsWorld
from tests.integration.cloud.fixtures_azure import AzureWorld
from tests.integration.cloud.fixtures_google import READER, GoogleWorld
from tests.integration.logins.broker import POLICY, LoginBroker, cloud_minters
from tests.integration.nodes.world import scan_for_leaks

pytestmark = pytest.mark.integration

# The cloud package's session fixtures (moto, the Google and Azure fixture worlds), shared.
aws = cloud.aws
google = cloud.google
azure = cloud.azure
cloud_ca = cloud.cloud_ca

CAROL = "carol"
TAG = "v1"


@dataclass
class LoginWorld:
    """The broker, what it fronts, and the images the node pulls (team/app:v1 on each)."""

    broker: LoginBroker
    aws: AwsWorld
    google: GoogleWorld
    azure: AzureWorld
    basic: HtpasswdRegistry
    basic_digest: str
    handed_out: list[str] = field(default_factory=list)
    """Short-lived logins the daemon served: in memory only on the node, like the rest."""

    @property
    def home(self) -> Path:
        return self.broker.home.root

    def image(self, host: str, repository: str = "team/app") -> str:
        return f"{host}/{repository}:{TAG}"

    def long_lived(self) -> list[str]:
        """Every long-lived credential the broker holds, and the logins the daemon handed out:
        none may be on the node's disk."""
        key_pem = json.loads(self.google.keys[READER])["private_key"]
        return [
            self.aws.puller.secret_access_key,
            key_pem.splitlines()[2],  # a line of the service account's private key
            self.azure.principals["reader"].secret,
            self.basic.users[CAROL],
            *self.handed_out,
        ]


@pytest.fixture(scope="package")
def login_world(
    tmp_path_factory: pytest.TempPathFactory,
    aws: AwsWorld,
    google: GoogleWorld,
    azure: AzureWorld,
) -> Iterator[LoginWorld]:
    """The broker with one record per case (ECR with and without a role, GAR, ACR, a Basic
    pass-through registry, Docker Hub and GHCR) and a node policy allowing team/app only."""
    work = tmp_path_factory.mktemp("logins")
    basic = HtpasswdRegistry(work / "basic", google.registry.ca)
    basic.add_user(CAROL, new_canary(CAROL))
    basic.start()
    home = Home(work / "home")
    home.root.mkdir(mode=0o700)
    home.policy_yaml.write_text(POLICY)
    broker: LoginBroker | None = None
    try:
        image = build_image(work / "layouts", "basic-app", [2048])
        digest = push_image(image, basic, "team/app", TAG, username=CAROL,
                            password=basic.users[CAROL])  # fmt: skip
        broker = LoginBroker(home, cloud_minters(aws, google, azure))
        world = LoginWorld(broker, aws, google, azure, basic, digest)
        _seed(broker, world)
        yield world
    finally:
        if broker is not None:
            broker.stop()
        basic.stop()


def _seed(broker: LoginBroker, world: LoginWorld) -> None:
    aws, google, azure, basic = world.aws, world.google, world.azure, world.basic
    keys = AwsCredential(aws.puller.access_key_id, Secret(aws.puller.secret_access_key))
    broker.seed("ecr", RegistryKind.ECR, f"https://{REGISTRY_HOST}", keys)
    role = AwsCredential(keys.access_key_id, keys.secret_access_key, ROLE_ARN)
    broker.seed("ecr-role", RegistryKind.ECR, f"https://{REGISTRY_HOST}", role)
    broker.seed("gar", RegistryKind.GAR, google.registry.url,
                GoogleServiceAccount(Secret(google.keys[READER])),
                ca_pem=google.registry.ca_pem)  # fmt: skip
    reader = azure.principals["reader"]
    principal = AzureServicePrincipal(reader.tenant, reader.client_id, Secret(reader.secret))
    broker.seed("acr", RegistryKind.ACR, azure.registry.url, principal,
                ca_pem=azure.registry.ca_pem)  # fmt: skip
    carol = BasicCredential(CAROL, Secret(basic.users[CAROL]))
    broker.seed("basic", RegistryKind.GENERIC, basic.url, carol, ca_pem=basic.ca_pem,
                passthrough=True)  # fmt: skip
    robot = BasicCredential("robot", Secret(secrets.token_hex(16)))
    broker.seed("hub", RegistryKind.DOCKER_HUB, "https://registry-1.docker.io", robot)
    broker.seed("ghcr", RegistryKind.GHCR, "https://ghcr.io", robot)


@pytest.fixture(scope="package")
def node_dir() -> Iterator[Path]:
    """A short /tmp folder for the daemon's socket and log, helper shims and auth files."""
    folder = short_dir("logins")
    try:
        yield folder
    finally:
        remove_tree(folder)


@pytest.fixture(scope="package")
def helper_bin(node_dir: Path) -> Path:
    return make_helper_bin(node_dir / "bin")


@pytest.fixture(scope="package")
def daemon(login_world: LoginWorld, node_dir: Path) -> Iterator[SidecarDaemon]:
    """The node daemon, told which images the runtimes pull through the credential helper."""
    images = [
        login_world.image(login_world.google.registry.host),
        login_world.image(login_world.azure.registry.host),
        login_world.image(login_world.basic.host),
        "ghcr.io/team/app:v1",
    ]
    sidecar = SidecarDaemon(login_world.home, node_dir / "d.sock", images).start()
    try:
        yield sidecar
    finally:
        sidecar.stop()


@pytest.fixture(autouse=True)
def no_long_lived_secret_on_disk(login_world: LoginWorld, node_dir: Path) -> Iterator[None]:
    """After every test: no credential the broker holds is in the node's folders."""
    yield
    found = scan_for_leaks(login_world.long_lived(), [login_world.home, node_dir], [])
    assert found == []
