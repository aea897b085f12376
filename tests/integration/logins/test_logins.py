"""IssueRegistryLogin through the real gRPC API: what each kind's login is, and the refusals."""

from __future__ import annotations

import time

import grpc
import pytest
from pullbroker_client.broker import BrokerCallError

from tests.integration.cloud.aws_world import ACCOUNT, REGISTRY_HOST
from tests.integration.cloud.fixtures_google import READER
from tests.integration.logins.conftest import CAROL, LoginWorld

pytestmark = pytest.mark.integration

ACR_USER = "00000000-0000-0000-0000-000000000000"


class TestCloudLogins:
    def test_ecr_login_is_aws_and_its_token(self, login_world: LoginWorld) -> None:
        """ECR: username AWS and GetAuthorizationToken's password, not limited to a repo."""
        with login_world.broker.client() as node:
            login = node.issue_registry_login(f"{REGISTRY_HOST}/team/app:v1", "ecr")
        assert (login.username, login.secret.reveal()) == ("AWS", f"{ACCOUNT}-auth-token")
        assert login.registry == "registries/ecr-id"
        assert (login.repository_scoped, login.passthrough, login.identity_token) == (
            False, False, False,
        )  # fmt: skip

    def test_ecr_login_with_a_role_is_repository_scoped(self, login_world: LoginWorld) -> None:
        """With a role ARN the AssumeRole session policy limits the login to the repository."""
        login_world.aws.reset_recording()
        with login_world.broker.client() as node:
            login = node.issue_registry_login(f"{REGISTRY_HOST}/team/app:v1", "ecr-role")
        assert login.username == "AWS"
        assert login.repository_scoped
        (assume,) = login_world.aws.calls("AssumeRole")
        assert "repository/team/app" in assume["form"]["Policy"][0]

    def test_google_login_is_the_access_token(self, login_world: LoginWorld) -> None:
        """GAR: oauth2accesstoken and the OAuth2 access token, for Google's expires_in."""
        started = time.time()
        with login_world.broker.client() as node:
            login = node.issue_registry_login(login_world.image(login_world.google.registry.host))
        assert login.username == "oauth2accesstoken"
        assert login_world.google.oauth.owner(login.secret.reveal()) == READER
        assert started + 3500 < login.expires_at.timestamp() < time.time() + 3600
        assert (login.repository_scoped, login.passthrough, login.identity_token) == (
            False, False, False,
        )  # fmt: skip

    def test_azure_login_is_a_refresh_token(self, login_world: LoginWorld) -> None:
        """ACR with a service principal: the exchanged refresh token, as an identity token."""
        login_world.azure.acr.clear()
        with login_world.broker.client() as node:
            login = node.issue_registry_login(login_world.image(login_world.azure.registry.host))
        assert (login.username, login.identity_token) == (ACR_USER, True)
        assert [s.status for s in login_world.azure.acr.seen("/oauth2/exchange")] == [200]
        assert login_world.azure.acr.seen("/oauth2/token") == []  # runtimes do that step


class TestPassthrough:
    def test_basic_only_registry_hands_out_its_credential_flagged(
        self, login_world: LoginWorld
    ) -> None:
        """A pass-through record: the stored credential, passthrough=True, and audited."""
        with login_world.broker.client() as node:
            login = node.issue_registry_login(login_world.image(login_world.basic.host))
        assert login.passthrough
        assert (login.username, login.secret.reveal()) == (CAROL, login_world.basic.users[CAROL])
        audited = [e for e in login_world.broker.audit_events() if e["registry"] == login.registry]
        assert "pass-through" in audited[-1]["reason"]

    def test_pull_token_says_passthrough_too(self, login_world: LoginWorld) -> None:
        """IssuePullToken marks the same credential passthrough; a cloud token is not."""
        with login_world.broker.client() as node:
            basic = node.issue_pull_token(login_world.image(login_world.basic.host))
            google = node.issue_pull_token(login_world.image(login_world.google.registry.host))
        assert (basic.passthrough, google.passthrough) == (True, False)


class TestRefusals:
    @pytest.mark.parametrize("image", ["ghcr.io/team/app:v1", "docker.io/team/app:v1"])
    def test_bearer_kinds_say_to_pull_with_the_sidecar(
        self, login_world: LoginWorld, image: str
    ) -> None:
        """Registries with repository-scoped tokens only: FAILED_PRECONDITION and the way out."""
        with login_world.broker.client() as node, pytest.raises(BrokerCallError) as caught:
            node.issue_registry_login(image)
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "issues only repository-scoped tokens" in caught.value.message
        for advice in ("--dest docker-daemon", "--dest containerd", "podman load -i FILE"):
            assert advice in caught.value.message

    def test_repository_outside_the_policy_is_permission_denied(
        self, login_world: LoginWorld
    ) -> None:
        """team/other is not the node's: PERMISSION_DENIED, nothing minted, audited denied."""
        login_world.google.oauth.clear()
        image = login_world.image(login_world.google.registry.host, "team/other")
        with login_world.broker.client() as node, pytest.raises(BrokerCallError) as caught:
            node.issue_registry_login(image)
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "team/other" in caught.value.message
        assert login_world.google.oauth.seen() == []
        denied = login_world.broker.audit_events()[-1]
        assert (denied["outcome"], denied["repository"]) == ("denied", "team/other")

    def test_admin_identity_may_not_ask(self, login_world: LoginWorld) -> None:
        """PullService is for nodes: the admin certificate is refused the method."""
        with login_world.broker.client("admin") as admin, pytest.raises(BrokerCallError) as caught:
            admin.issue_registry_login(login_world.image(login_world.basic.host))
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
