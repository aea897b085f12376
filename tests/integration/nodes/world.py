"""The registries, broker records and policy the node tests pull against.

- the shared token-auth registry (Docker Hub-like; alice's credential), behind a front
  door that records the bearer tokens the sidecar sends (so tests can look for them on
  disk): record `nodes-token`;
- two Basic-only registries (htpasswd) whose records allow audited pass-through, the kind
  of registry whose login a runtime can use: `nodes-basic` (carol) and `nodes-basic-b`
  (dave);
- a policy letting nodes pull only some repositories of `nodes-*` records: `team/other` is
  outside it everywhere.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from pullbroker_client.broker import BrokerCallError, BrokerClient, BrokerTarget

from tests.harness.broker_process import BrokerProcess
from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.certs import TestCA
from tests.harness.https_server import Reply, Request
from tests.harness.images import build_image, push_image
from tests.harness.registry import HtpasswdRegistry, Registry, TokenAuthRegistry
from tests.harness.standard import ALICE, PushedImage, seed_image
from tests.integration.sidecar.frontdoor import FrontDoor

CAROL = "carol"
DAVE = "dave"
ACCEPT = ",".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
ALLOWED = ("team/app", "team/multi", "team/sidecar", "team/nodes-*", "public/*")
POLICY = """\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: ["nodes-*"]
    repositories: [{repositories}]
"""


class RecordingDoor(FrontDoor):
    """The sidecar tests' front door, also recording the Range header of every blob GET."""

    def __init__(self, registry: TokenAuthRegistry, ca: TestCA) -> None:
        super().__init__(registry, ca)
        self.ranges: list[str | None] = []

    def blob(self, request: Request) -> Reply:
        self.ranges.append(request.headers.get("range"))
        return super().blob(request)


@dataclass(frozen=True)
class BasicImage:
    """An image pushed to a Basic-only registry."""

    registry: HtpasswdRegistry
    repository: str
    tag: str
    digest: str
    config_digest: str

    @property
    def reference(self) -> str:
        return f"{self.registry.host}/{self.repository}:{self.tag}"


@dataclass
class NodeWorld:
    """Everything the node tests share (one per package run)."""

    broker: BrokerProcess
    door: RecordingDoor
    token_registry: TokenAuthRegistry
    basic: HtpasswdRegistry
    basic_b: HtpasswdRegistry
    app: PushedImage  # team/app:v1 in the token registry
    basic_app: BasicImage  # team/app:v1 in `basic`
    basic_other: BasicImage  # team/other:v1 in `basic_b` (outside the policy)
    seed_dir: Path
    secrets: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.broker.home.root

    def via_door(self, repository: str, tag: str) -> str:
        return f"{self.door.host}/{repository}:{tag}"

    def seed(self, repository: str, tag: str, sizes: list[int]) -> PushedImage:
        """A fresh image in the token registry (unique random layers)."""
        return seed_image(self.token_registry, self.seed_dir, repository, tag, sizes)

    def long_lived(self) -> list[str]:
        """The registry passwords the broker holds: never on a node's disk."""
        return [
            self.token_registry.users[ALICE],
            self.basic.users[CAROL],
            self.basic_b.users[DAVE],
            *self.secrets,
        ]

    def tokens_seen(self) -> list[str]:
        """Bearer tokens the sidecar sent to the token registry (through the door)."""
        return sorted({a.split(" ", 1)[1] for a in self.door.blob_authorizations if a})


def push_basic(
    registry: HtpasswdRegistry, user: str, layouts: Path, repository: str, tag: str
) -> BasicImage:
    """Build and push a small image to a Basic-only registry as `user`."""
    image = build_image(layouts, f"{registry.port}-{repository.replace('/', '-')}-{tag}", [3072])
    digest = push_image(
        image, registry, repository, tag, username=user, password=registry.users[user]
    )
    return BasicImage(registry, repository, tag, digest, image.manifests[0].config_digest)


def start_basic(workdir: Path, ca: TestCA, user: str) -> HtpasswdRegistry:
    registry = HtpasswdRegistry(workdir, ca)
    registry.add_user(user, new_canary(user))
    return registry.start()


def restrict_policy(broker: BrokerProcess, denied_image: str) -> None:
    """Write the node policy (ALLOWED repositories only) and wait until the broker uses it."""
    patterns = ", ".join(json.dumps(r) for r in ALLOWED)
    broker.home.policy_yaml.write_text(POLICY.format(repositories=patterns))
    deadline = time.monotonic() + 10
    with BrokerClient(BrokerTarget.from_home(broker.home, "node")) as node:
        while time.monotonic() < deadline:
            try:
                node.issue_pull_token(denied_image)
            except BrokerCallError as exc:
                if exc.code is grpc.StatusCode.PERMISSION_DENIED:
                    return
            time.sleep(0.2)
    raise AssertionError("the broker never applied the node policy")


def registry_get(registry: Registry, path: str, auth: dict[str, str]) -> tuple[int, str]:
    """GET on the registry with the provider's username/password, as the runtime would."""
    context = ssl.create_default_context(cadata=registry.ca_pem)
    conn = http.client.HTTPSConnection("127.0.0.1", registry.port, context=context, timeout=10)
    pair = f"{auth['username']}:{auth['password']}".encode()
    try:
        conn.request("GET", path, headers={
            "Authorization": "Basic " + base64.b64encode(pair).decode(), "Accept": ACCEPT,
        })  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Docker-Content-Digest") or ""
    finally:
        conn.close()


@dataclass
class LeakCheck:
    """What the leak check searches: folders and outputs, for these extra secrets too."""

    folders: list[Path]
    secrets: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def output(self, *texts: str) -> None:
        """Record command output that must not show a secret."""
        self.outputs.extend(texts)


def scan_for_leaks(needles: list[str], folders: list[Path], texts: list[str]) -> list[str]:
    """Where any needle shows up (files under `folders`, or `texts`): empty when clean."""
    found: list[str] = []
    for needle in needles:
        for folder in folders:
            if folder.exists():
                found += [f"{p} holds a secret" for p in find_in_tree(folder, needle)]
        found += [
            f"output {i} holds a secret" for i, t in enumerate(texts) if find_in_text(t, needle)
        ]
    return found
