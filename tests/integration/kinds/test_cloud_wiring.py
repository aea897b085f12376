"""The cloud kinds plugged into the kind table and the minter table, through the use cases.

ECR is the one cloud kind whose registry host the broker never dials to mint, so a real
moto server lets a record with a real ECR host be added, tested and issued a token through
Registries and TokenIssuer (the cloud minters' own suites live in tests/integration/cloud).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.model import AuthKind, AwsCredential, RegistryKind
from pullbroker_service.minting.ecr import EcrConfig, EcrMinter
from structlog.testing import capture_logs

from tests.integration.cloud.aws_world import REGION, REGISTRY_HOST, AwsWorld, start_aws
from tests.integration.kinds.world import World, build_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsWorld]:
    """moto with IAM users and the team/app ECR repository."""
    world = start_aws(tmp_path_factory.mktemp("moto-kinds"))
    try:
        yield world
    finally:
        world.server.stop()


@pytest.fixture
async def ecr_world(tmp_path: Path, aws: AwsWorld) -> AsyncIterator[World]:
    """The broker core with the ECR minter pointed at moto."""
    ecr = EcrMinter(EcrConfig(endpoint_url=aws.url, sts_endpoint_url=aws.url))
    built = build_world(tmp_path, ecr=ecr)
    try:
        yield built
    finally:
        await built.close()


class TestEcrThroughTheUseCases:
    """An ECR record is validated by cloud_kinds, tested and minted by the ECR minter."""

    async def test_add_test_and_issue(self, ecr_world: World, aws: AwsWorld) -> None:
        """create(test=True) derives the region; the issued BASIC token is not pass-through."""
        keys = AwsCredential(aws.puller.access_key_id, Secret(aws.puller.secret_access_key))
        record = await ecr_world.add(
            RegistryKind.ECR, f"https://{REGISTRY_HOST}", "", keys, test=True
        )
        assert (record.host, record.region) == (REGISTRY_HOST, REGION)
        result = await ecr_world.registries.test("reg", None, None, "team/app")
        assert result.outcome == "ok", result.message
        with capture_logs() as logs:
            token = await ecr_world.pull_token(f"{REGISTRY_HOST}/team/app:v1")
        assert (token.auth_kind, token.username) == (AuthKind.BASIC, "AWS")
        assert "basic_passthrough_used" not in [e["event"] for e in logs]

    async def test_cloud_validator_refuses(self, ecr_world: World) -> None:
        """A malformed role ARN is refused by the ECR validator before anything is stored."""
        keys = AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("s"), role_arn="not-an-arn")
        with pytest.raises(InvalidRegistry, match="role_arn is not an IAM role ARN"):
            await ecr_world.add(RegistryKind.ECR, f"https://{REGISTRY_HOST}", "", keys)
        assert await ecr_world.secrets.list_keys() == []
