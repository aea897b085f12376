"""What a node does for a deployment: get a token, pull the image, report how it went.

The node side is the sidecar's own code, as `pullbroker-sidecar pull --deployment` runs it:
the pull engine (a broker token per image, manifests and blobs through the node's fetcher,
everything verified) into an `oci:` layout, wrapped in
`pullbroker_sidecar.report.pull_reported` for the DEPLOYING / DEPLOYED / FAILED reports.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pullbroker.v1 import deployment_pb2, registry_pb2
from pullbroker_client.broker import AsyncBrokerClient, BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.secret import Secret
from pullbroker_sidecar.pull.destinations import OciDestination
from pullbroker_sidecar.pull.engine import PullEngine, PullResult
from pullbroker_sidecar.report import pull_reported

from tests.harness.registry import TokenAuthRegistry


async def deploy_on_node(target: BrokerTarget, deployment: str, image: str) -> PullResult:
    """Pull `image` for `deployment` as the sidecar does, reporting each transition; warnings
    fail the test. The result's `digest` is the image manifest's."""

    def warn(line: str) -> None:
        raise AssertionError(line)

    with tempfile.TemporaryDirectory(prefix="node-pull-") as folder:
        async with AsyncBrokerClient(target) as node:
            engine = PullEngine(node)
            dest = OciDestination(Path(folder) / "oci")
            return await pull_reported(
                node, deployment, lambda: engine.pull(image, dest), lambda r: r.digest, warn=warn
            )


def add_registry(
    client: BrokerClient, name: str, registry: TokenAuthRegistry, user: str, *, test: bool = False
) -> Any:
    """A generic registry record for the harness registry with `user`'s credential."""
    record = registry_pb2.Registry(
        display_name=name,
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=registry.url,
        registry_ca_pem=registry.ca_pem,
    )
    credential = basic_credential(user, Secret(registry.users[user]))
    return client.create_registry(record, credential, test=test)


def kubernetes(namespace: str, workload: str) -> Any:
    target = deployment_pb2.DeploymentTarget()
    target.kubernetes.namespace, target.kubernetes.workload = namespace, workload
    return target


def deployment(image: str, registry: str = "", target: Any | None = None) -> Any:
    return deployment_pb2.Deployment(
        image=image, registry=registry, target=target or kubernetes("prod", "web")
    )
