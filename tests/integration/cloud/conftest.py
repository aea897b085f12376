"""Fixtures for the cloud minters: real moto (ECR, STS, IAM) and local cloud-endpoint fixtures.

moto runs with IAM authentication off; `enforce_aws_auth` turns it on for one test (moto then
checks access keys, signatures and IAM policies, the way AWS does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.certs import TestCA
from tests.harness.process import HarnessError, require_tool
from tests.integration.cloud.aws_world import AwsWorld, start_aws
from tests.integration.cloud.fixtures_azure import AzureWorld, start_azure_world
from tests.integration.cloud.fixtures_google import GoogleWorld, start_google_world


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsWorld]:
    """A moto server seeded with IAM principals, a role and two ECR repositories."""
    world = start_aws(tmp_path_factory.mktemp("moto-cloud"))
    try:
        yield world
    finally:
        world.server.stop()


@pytest.fixture
def aws_calls(aws: AwsWorld) -> AwsWorld:
    """The AWS world with its request recording emptied."""
    aws.reset_recording()
    return aws


@pytest.fixture
def enforce_aws_auth(aws: AwsWorld) -> Iterator[AwsWorld]:
    """moto checks keys, signatures and IAM policies during the test."""
    aws.api("reset-auth", b"0")
    try:
        yield aws
    finally:
        aws.api("reset-auth", b"inf")


def _require_tools() -> None:
    # Missing tools fail loudly: a silently skipped integration suite looks like a green one.
    try:
        for tool in ("docker-registry", "skopeo"):
            require_tool(tool)
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def cloud_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A CA of our own: its token signer must not collide with the shared registry's."""
    return TestCA.create(tmp_path_factory.mktemp("cloud-ca"), "cloud fixtures CA")


@pytest.fixture(scope="session")
def google(tmp_path_factory: pytest.TempPathFactory, cloud_ca: TestCA) -> Iterator[GoogleWorld]:
    """Google OAuth + registry-token fixtures in front of a real registry holding team/app:v1."""
    _require_tools()
    world = start_google_world(tmp_path_factory.mktemp("google"), cloud_ca)
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture(scope="session")
def azure(tmp_path_factory: pytest.TempPathFactory, cloud_ca: TestCA) -> Iterator[AzureWorld]:
    """AAD + ACR token fixtures in front of a real registry holding team/app:v1."""
    _require_tools()
    world = start_azure_world(tmp_path_factory.mktemp("azure"), cloud_ca)
    try:
        yield world
    finally:
        world.stop()
