"""The ECR minter against a real moto server (ECR, STS and IAM APIs)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import (
    CredentialRejected,
    PullNotAllowed,
    RegistryTLSFailure,
    RegistryUnreachable,
)
from pullbroker_service.domain.model import AuthKind, AwsCredential, RegistryKind
from pullbroker_service.minting.ecr import UNTRUSTED_EXPIRY_LIFETIME, EcrConfig, EcrMinter

from tests.harness.process import free_port
from tests.integration.cloud.aws_world import (
    ACCOUNT,
    REGION,
    REGISTRY_HOST,
    ROLE_ARN,
    AwsKeyPair,
    AwsWorld,
)
from tests.integration.cloud.records import record

pytestmark = pytest.mark.integration

ECR = record(RegistryKind.ECR, REGISTRY_HOST, region=REGION, name="ecr")
GET_TOKEN = "GetAuthorizationToken"


def minter(aws: AwsWorld) -> EcrMinter:
    return EcrMinter(EcrConfig(endpoint_url=aws.url, sts_endpoint_url=aws.url))


def credential(keys: AwsKeyPair, *, role_arn: str = "", secret: str | None = None) -> AwsCredential:
    return AwsCredential(
        keys.access_key_id, Secret(secret or keys.secret_access_key), role_arn=role_arn
    )


def policy_of(call: dict[str, object]) -> dict[str, object]:
    form = call["form"]
    assert isinstance(form, dict)
    policy: dict[str, object] = json.loads(form["Policy"][0])
    return policy


class TestMint:
    async def test_mints_basic_aws_password(self, aws_calls: AwsWorld) -> None:
        """A mint decodes ECR's base64 AWS:<password> into a Basic credential for the repo."""
        token = await minter(aws_calls).mint(ECR, credential(aws_calls.puller), "team/app")
        assert token.auth_kind is AuthKind.BASIC
        assert token.username == "AWS"
        assert token.token.reveal() == f"{ACCOUNT}-auth-token"  # moto's password for the account
        assert token.scope == "repository:team/app:pull"
        assert token.repository == "team/app"
        assert len(aws_calls.calls(GET_TOKEN)) == 1

    async def test_expiry_in_the_past_gets_a_short_lifetime(self, aws_calls: AwsWorld) -> None:
        """moto's 2015 expiry is not trusted: the token lives UNTRUSTED_EXPIRY_LIFETIME only."""
        token = await minter(aws_calls).mint(ECR, credential(aws_calls.puller), "team/app")
        assert token.expires_at - token.issued_at == UNTRUSTED_EXPIRY_LIFETIME
        assert token.expires_at - token.issued_at < timedelta(hours=12)

    async def test_role_session_policy_names_only_the_repository(self, aws_calls: AwsWorld) -> None:
        """With a role, AssumeRole carries a 900 s session policy for the asked repo alone."""
        other_account_role = "arn:aws:iam::210987654321:role/ecr-pull"
        cred = credential(aws_calls.puller, role_arn=other_account_role)
        token = await minter(aws_calls).mint(ECR, cred, "team/app")
        (assume,) = aws_calls.calls("AssumeRole")
        assert assume["form"]["RoleArn"] == [other_account_role]
        assert assume["form"]["DurationSeconds"] == ["900"]
        statements = policy_of(assume)["Statement"]
        assert isinstance(statements, list)
        resources = {s["Resource"] for s in statements}
        assert resources == {"*", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/app"}
        star = next(s for s in statements if s["Resource"] == "*")
        assert star["Action"] == "ecr:GetAuthorizationToken"
        # The token came from the assumed session (moto names the role's account in it).
        assert token.token.reveal() == "210987654321-auth-token"

    async def test_concurrent_mints_make_one_call(self, aws_calls: AwsWorld) -> None:
        """Eight concurrent mints for one account/region/key cost one GetAuthorizationToken."""
        ecr = minter(aws_calls)
        cred = credential(aws_calls.puller)
        repositories = ["team/app", "team/other"] * 4
        tokens = await asyncio.gather(*(ecr.mint(ECR, cred, r) for r in repositories))
        assert {t.token.reveal() for t in tokens} == {f"{ACCOUNT}-auth-token"}
        assert [t.repository for t in tokens] == repositories
        assert len(aws_calls.calls(GET_TOKEN)) == 1

    async def test_role_mints_for_two_repositories_stay_apart(self, aws_calls: AwsWorld) -> None:
        """Role tokens are per repository: concurrent mints for two repos assume twice."""
        ecr = minter(aws_calls)
        cred = credential(aws_calls.puller, role_arn=ROLE_ARN)
        await asyncio.gather(*(ecr.mint(ECR, cred, r) for r in ["team/app", "team/other"] * 3))
        named = sorted(
            s["Resource"]
            for call in aws_calls.calls("AssumeRole")
            for s in policy_of(call)["Statement"]  # type: ignore[attr-defined]
            if s["Resource"] != "*"
        )
        assert named == [
            f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/app",
            f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/other",
        ]
        assert len(aws_calls.calls(GET_TOKEN)) == 2


@pytest.mark.usefixtures("enforce_aws_auth")
class TestErrors:
    async def test_wrong_secret_is_credential_rejected(self, aws: AwsWorld) -> None:
        """A wrong secret gives CredentialRejected naming the fix, never the secret."""
        cred = credential(aws.puller, secret="not-the-secret-canary")
        with pytest.raises(CredentialRejected, match="access key id and secret") as caught:
            await minter(aws).mint(ECR, cred, "team/app")
        assert "not-the-secret-canary" not in str(caught.value)
        assert aws.puller.secret_access_key not in str(caught.value)

    async def test_unknown_key_is_credential_rejected(self, aws: AwsWorld) -> None:
        """An access key AWS does not know gives CredentialRejected."""
        cred = AwsCredential("AKIAUNKNOWNKEY000000", Secret("whatever"))
        with pytest.raises(CredentialRejected, match="InvalidClientTokenId"):
            await minter(aws).mint(ECR, cred, "team/app")

    async def test_key_without_permission_is_pull_not_allowed(self, aws: AwsWorld) -> None:
        """A valid key without ecr:GetAuthorizationToken gives PullNotAllowed."""
        with pytest.raises(PullNotAllowed, match="ecr:GetAuthorizationToken"):
            await minter(aws).mint(ECR, credential(aws.nobody), "team/app")

    async def test_role_the_key_may_not_assume_is_pull_not_allowed(self, aws: AwsWorld) -> None:
        """A key without sts:AssumeRole gives PullNotAllowed that points at the trust policy."""
        cred = credential(aws.token_only, role_arn=ROLE_ARN)
        with pytest.raises(PullNotAllowed, match="trust policy"):
            await minter(aws).mint(ECR, cred, "team/app")

    async def test_unreachable_endpoint_is_registry_unreachable(self, aws: AwsWorld) -> None:
        """Nothing listening at the ECR endpoint gives RegistryUnreachable."""
        config = EcrConfig(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
        with pytest.raises(RegistryUnreachable, match="could not reach AWS"):
            await EcrMinter(config).mint(ECR, credential(aws.puller), "team/app")

    async def test_tls_to_a_plain_endpoint_is_tls_failure(self, aws: AwsWorld) -> None:
        """An https endpoint that does not speak TLS gives RegistryTLSFailure."""
        config = EcrConfig(endpoint_url=aws.url.replace("http://", "https://"))
        with pytest.raises(RegistryTLSFailure):
            await EcrMinter(config).mint(ECR, credential(aws.puller), "team/app")


@pytest.mark.usefixtures("enforce_aws_auth")
class TestProbe:
    async def test_probe_ok(self, aws: AwsWorld) -> None:
        """A key that may pull probes ok."""
        result = await minter(aws).probe(ECR, credential(aws.puller), "team/app")
        assert (result.outcome, result.auth_scheme) == ("ok", "basic")

    async def test_probe_ok_through_role(self, aws: AwsWorld) -> None:
        """The role path probes ok: assume, token and pull check with the session."""
        result = await minter(aws).probe(ECR, credential(aws.puller, role_arn=ROLE_ARN), "team/app")
        assert result.outcome == "ok", result.message

    async def test_probe_wrong_secret(self, aws: AwsWorld) -> None:
        """A wrong secret probes credential_rejected."""
        result = await minter(aws).probe(ECR, credential(aws.puller, secret="nope"), "team/app")
        assert result.outcome == "credential_rejected"

    async def test_probe_token_without_pull(self, aws: AwsWorld) -> None:
        """A key that gets a token but may not BatchGetImage probes not_allowed."""
        result = await minter(aws).probe(ECR, credential(aws.token_only), "team/app")
        assert result.outcome == "not_allowed"
        assert "AccessDenied" in result.message

    async def test_probe_unreachable(self, aws: AwsWorld) -> None:
        """No endpoint probes unreachable."""
        config = EcrConfig(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
        result = await EcrMinter(config).probe(ECR, credential(aws.puller), "team/app")
        assert result.outcome == "unreachable"

    async def test_probe_missing_repository(self, aws: AwsWorld) -> None:
        """A repository the registry lacks probes not_allowed and says so."""
        result = await minter(aws).probe(ECR, credential(aws.puller), "team/missing")
        assert result.outcome == "not_allowed"
        assert "team/missing" in result.message
