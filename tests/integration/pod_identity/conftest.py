"""A real broker that verifies pods' service-account tokens, and a node calling it over gRPC.

The cluster is the stand-in issuer of cluster.py: its JWKS is published to a file the broker
is configured with (`kubernetes: {issuer, audience, jwks_file}` in a config file, parsed by
load_config), as a refresh job would keep it. Calls go through a real mTLS channel with the
home's node certificate and the generated stub, so the token travels in
IssuePullTokenRequest.service_account_token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import pytest
from pullbroker.v1 import pull_pb2, pull_pb2_grpc
from pullbroker_client.home import Home
from pullbroker_client.tls import TlsFiles, channel_credentials
from pullbroker_service.config import broker as broker_config

from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE
from tests.integration.conftest import RunningBroker
from tests.integration.pod_identity.cluster import AUDIENCE, ClusterKey, FakeCluster
from tests.integration.test_api_pull import add_registry

# Scoped: team/app only for service account team-a/puller. Unscoped: team/other for all.
POLICY = """\
rules:
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
  - identity: "spiffe://pullbroker.local/node/*"
    roles: [node]
    registries: ["*"]
    repositories: ["team/app"]
    kubernetes:
      namespaces: ["team-a"]
      service_accounts: ["team-a/puller"]
  - identity: "spiffe://pullbroker.local/node/*"
    registries: ["*"]
    repositories: ["team/other"]
"""


@pytest.fixture(scope="module")
def cluster() -> FakeCluster:
    """The stand-in issuer, with an RSA and a P-256 key (generated once per module)."""
    return FakeCluster(keys=[ClusterKey.generate("ES256"), ClusterKey.generate("RS256")])


@dataclass(frozen=True)
class Refusal:
    """A failed call's status code and message."""

    code: grpc.StatusCode
    details: str


class Node:
    """IssuePullToken over mTLS with the home's node certificate, token field included."""

    def __init__(self, broker: RunningBroker) -> None:
        tls = TlsFiles.from_home(broker.home, "node")
        self._channel = grpc.secure_channel(broker.address, channel_credentials(tls))
        self._stub = pull_pb2_grpc.PullServiceStub(self._channel)

    def issue(self, image: str, service_account_token: str = "") -> Any:
        request = pull_pb2.IssuePullTokenRequest(
            image=image, service_account_token=service_account_token
        )
        return self._stub.IssuePullToken(request, timeout=20)

    def refusal(self, image: str, service_account_token: str = "") -> Refusal:
        """How IssuePullToken fails (the test fails if it does not)."""
        with pytest.raises(grpc.RpcError) as caught:
            self.issue(image, service_account_token)
        error: Any = caught.value  # a grpc.Call as well as an RpcError
        return Refusal(error.code(), error.details() or "")

    def close(self) -> None:
        self._channel.close()


@dataclass
class PodWorld:
    """A broker with the scoped policy and a registry record, the cluster, and a node."""

    broker: RunningBroker
    cluster: FakeCluster
    jwks_file: Path
    node: Node


@pytest.fixture
def make_pod_world(
    make_broker: Callable[..., RunningBroker],
    token_registry: TokenAuthRegistry,
    cluster: FakeCluster,
    tmp_path: Path,
) -> Iterator[Callable[..., PodWorld]]:
    """Factory: a broker configured for `cluster` (or, with kubernetes=False, not at all)."""
    nodes: list[Node] = []

    def make(*, kubernetes: bool = True) -> PodWorld:
        jwks_file = cluster.publish(tmp_path / f"jwks-{len(nodes)}.json")
        overrides = _kubernetes_settings(tmp_path, cluster.issuer, jwks_file) if kubernetes else {}
        broker = make_broker(POLICY, **overrides)
        with broker.client("admin") as admin:
            add_registry(admin, "team", token_registry, ALICE)
        node = Node(broker)
        nodes.append(node)
        return PodWorld(broker, cluster, jwks_file, node)

    try:
        yield make
    finally:
        for node in nodes:
            node.close()


def _kubernetes_settings(folder: Path, issuer: str, jwks_file: Path) -> dict[str, Any]:
    """The `kubernetes` setting as an operator writes it, parsed by load_config."""
    config_file = folder / "broker.yaml"
    config_file.write_text(
        f"kubernetes: {{issuer: {issuer!r}, audience: {AUDIENCE}, jwks_file: {jwks_file.name}}}\n"
    )
    parsed = broker_config.load_config(home=Home(folder / "unused-home"), config_file=config_file)
    return {f.name: getattr(parsed, f.name) for f in fields(parsed) if f.name == "kubernetes"}


@pytest.fixture
def pod_world(make_pod_world: Callable[..., PodWorld]) -> PodWorld:
    """A broker that verifies the cluster's tokens, with the scoped policy."""
    return make_pod_world()
