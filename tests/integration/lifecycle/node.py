"""What a node does for a deployment: get a token, pull the manifest, report how it went.

The node side is the sidecar's own code: its broker-backed authorizer for the token, the
registry client for the pull (the manifest, verified against its digest), and
`pullbroker_sidecar.report.pull_reported` for the DEPLOYING / DEPLOYED / FAILED reports.
"""

from __future__ import annotations

from typing import Any

from pullbroker.v1 import deployment_pb2, registry_pb2
from pullbroker_client.broker import AsyncBrokerClient, BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.registry.client import Manifest, RegistryClient
from pullbroker_client.registry.reference import parse_reference
from pullbroker_client.secret import Secret
from pullbroker_sidecar.report import pull_reported
from pullbroker_sidecar.tokens import BrokerAuthorizer

from tests.harness.registry import TokenAuthRegistry


async def pull_manifest(node: AsyncBrokerClient, image: str) -> Manifest:
    """Pull `image`'s manifest with a token from the broker, as the sidecar does."""
    ref = parse_reference(image)
    authorizer = BrokerAuthorizer(node, image)
    grant = await authorizer.grant()
    client = RegistryClient(
        grant.registry_url, ca_pem=grant.registry_ca_pem or None, authorizer=authorizer
    )
    try:
        return await client.get_manifest(ref.repository, ref.identifier)
    finally:
        await client.aclose()


async def deploy_on_node(target: BrokerTarget, deployment: str, image: str) -> Manifest:
    """Pull `image` for `deployment`, reporting each transition; warnings fail the test."""

    def warn(line: str) -> None:
        raise AssertionError(line)

    async with AsyncBrokerClient(target) as node:
        return await pull_reported(
            node, deployment, lambda: pull_manifest(node, image), lambda m: m.digest, warn=warn
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
