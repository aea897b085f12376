"""Pure parts of the cloud minters: policies, error tables, assertions, lifetimes, coalescing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pullbroker_client.secret import Secret
from pullbroker_service.domain.cloud_kinds import GoogleKeyInfo, parse_ecr_host
from pullbroker_service.domain.errors import (
    CredentialRejected,
    PullNotAllowed,
    RateLimited,
    RegistryTLSFailure,
    RegistryUnreachable,
    UpstreamProtocolError,
)
from pullbroker_service.minting import azure, ecr
from pullbroker_service.minting.coalesce import SingleFlight
from pullbroker_service.minting.ecr import (
    AwsKeys,
    aws_error,
    probe_failure,
    session_policy,
)
from pullbroker_service.minting.google import service_account_assertion

HOST = parse_ecr_host("123456789012.dkr.ecr.us-east-1.amazonaws.com")


def client_error(code: str, message: str = "details") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "Op")


class TestSessionPolicy:
    def test_allows_token_and_pull_on_one_repository(self) -> None:
        """The session policy grants GetAuthorizationToken and the three pull actions on one ARN."""
        document = json.loads(session_policy(HOST, "team/app"))
        token, pull = document["Statement"]
        assert token == {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
        assert sorted(pull["Action"]) == [
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        ]
        assert pull["Resource"] == "arn:aws:ecr:us-east-1:123456789012:repository/team/app"

    def test_china_partition_arn(self) -> None:
        """A China registry's ARN uses the aws-cn partition."""
        china = parse_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
        statement = json.loads(session_policy(china, "app"))["Statement"][1]
        assert statement["Resource"].startswith("arn:aws-cn:ecr:cn-north-1:")


class TestAwsErrors:
    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (client_error("UnrecognizedClientException"), CredentialRejected),
            (client_error("InvalidClientTokenId"), CredentialRejected),
            (client_error("SignatureDoesNotMatch"), CredentialRejected),
            (client_error("AccessDenied"), PullNotAllowed),
            (client_error("AccessDeniedException"), PullNotAllowed),
            (client_error("ThrottlingException"), RateLimited),
            (client_error("ServerException"), UpstreamProtocolError),
            (
                botocore.exceptions.EndpointConnectionError(endpoint_url="https://x"),
                RegistryUnreachable,
            ),
            (
                botocore.exceptions.SSLError(endpoint_url="https://x", error="bad"),
                RegistryTLSFailure,
            ),
        ],
    )
    def test_vendor_errors_map_to_the_domain(self, exc: Exception, expected: type) -> None:
        """Each AWS failure becomes its domain error."""
        assert type(aws_error(exc, "ECR GetAuthorizationToken", "us-east-1")) is expected

    def test_xml_error_body_is_read(self) -> None:
        """A JSON-protocol call answered with an XML error (status as code) is still classified."""
        xml = "<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>"
        assert isinstance(aws_error(client_error("403", xml), "ECR", ""), CredentialRejected)

    def test_messages_name_the_code_not_the_aws_text(self) -> None:
        """The AWS message (which may quote request details) is not repeated."""
        error = aws_error(
            client_error("AccessDenied", "arn:aws:iam::1:user/secret-canary"), "ECR", ""
        )
        assert "AccessDenied" in str(error)
        assert "secret-canary" not in str(error)

    def test_throttling_probes_rate_limited_with_retry_hint(self) -> None:
        """A throttled probe says rate_limited and when to retry."""
        result = probe_failure(
            aws_error(client_error("ThrottlingException"), "ECR", ""), 0.1, "basic"
        )
        assert result.outcome == "rate_limited"
        assert "retry after 1 s" in result.message


class TestEcrExpiry:
    def grant(self, expires_at: datetime | None, session: datetime | None = None) -> ecr._Grant:
        return ecr._Grant("AWS", "pw", expires_at, session)

    def test_ecr_expiry_is_used(self) -> None:
        """A normal 12 h expiry is kept."""
        now = datetime.now(UTC)
        assert ecr._expiry(self.grant(now + timedelta(hours=12)), now, "h") == now + timedelta(
            hours=12
        )

    def test_role_session_end_caps_the_token(self) -> None:
        """With a role, the token lives no longer than the 15-minute session."""
        now = datetime.now(UTC)
        grant = self.grant(now + timedelta(hours=12), now + timedelta(minutes=15))
        assert ecr._expiry(grant, now, "h") == now + timedelta(minutes=15)

    def test_past_expiry_is_untrusted(self) -> None:
        """An expiry in the past gets the short untrusted lifetime."""
        now = datetime.now(UTC)
        grant = self.grant(datetime(2015, 1, 1, tzinfo=UTC))
        assert ecr._expiry(grant, now, "h") == now + ecr.UNTRUSTED_EXPIRY_LIFETIME

    def test_far_future_is_capped_at_12_hours(self) -> None:
        """An expiry beyond ECR's 12 hours is not believed."""
        now = datetime.now(UTC)
        assert ecr._expiry(self.grant(now + timedelta(days=3)), now, "h") == now + timedelta(
            hours=12
        )

    @pytest.mark.parametrize("token", ["not base64!", base64.b64encode(b"no-colon").decode()])
    def test_bad_tokens_are_protocol_errors(self, token: str) -> None:
        """A token that is not base64 user:password is refused without echoing it."""
        with pytest.raises(UpstreamProtocolError) as caught:
            ecr._decode_token(token)
        assert token not in str(caught.value)

    def test_keys_repr_hides_secrets(self) -> None:
        """AwsKeys never renders the secret or session token."""
        text = repr(AwsKeys("AKIAEXAMPLE", "secret-canary", "session-canary"))
        assert "secret-canary" not in text
        assert "session-canary" not in text


class TestSingleFlight:
    async def test_concurrent_calls_share_one_run(self) -> None:
        """Ten concurrent runs for one key execute the work once."""
        flight: SingleFlight[int] = SingleFlight()
        calls = 0
        release = asyncio.Event()

        async def work() -> int:
            nonlocal calls
            calls += 1
            await release.wait()
            return 42

        waiters = [asyncio.ensure_future(flight.run(("k",), work)) for _ in range(10)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*waiters) == [42] * 10
        assert calls == 1

    async def test_error_reaches_every_waiter_and_is_not_kept(self) -> None:
        """A failure is raised to all waiters; the next run tries again."""
        flight: SingleFlight[int] = SingleFlight()
        attempts = 0

        async def work() -> int:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0)
            if attempts == 1:
                raise RegistryUnreachable("down")
            return 7

        results = await asyncio.gather(
            flight.run(("k",), work), flight.run(("k",), work), return_exceptions=True
        )
        assert all(isinstance(r, RegistryUnreachable) for r in results)
        assert await flight.run(("k",), work) == 7

    async def test_cancelled_waiter_does_not_cancel_the_run(self) -> None:
        """One caller giving up leaves the shared run going for the others."""
        flight: SingleFlight[int] = SingleFlight()
        release = asyncio.Event()

        async def work() -> int:
            await release.wait()
            return 1

        first = asyncio.ensure_future(flight.run(("k",), work))
        second = asyncio.ensure_future(flight.run(("k",), work))
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        assert await second == 1


class TestGoogleAssertion:
    def test_signed_with_the_key_and_shaped_for_google(self) -> None:
        """The assertion verifies with the public key and carries iss, scope, aud, iat, exp, kid."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        info = GoogleKeyInfo(
            "sa@p.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token", "k1"
        )
        assertion = service_account_assertion(key, info, "scope-x", 1_700_000_000, 300).reveal()
        header_b64, claims_b64, signature_b64 = assertion.split(".")

        def decode(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        key.public_key().verify(
            decode(signature_b64),
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        assert json.loads(decode(header_b64)) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
        assert json.loads(decode(claims_b64)) == {
            "iss": "sa@p.iam.gserviceaccount.com",
            "scope": "scope-x",
            "aud": "https://oauth2.googleapis.com/token",
            "iat": 1_700_000_000,
            "exp": 1_700_000_300,
        }


def jwt_with(claims: dict[str, object]) -> Secret:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return Secret(f"eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln")


class TestAcrLifetime:
    def test_exp_claim_sets_the_lifetime(self) -> None:
        """A JWT's exp gives the lifetime."""
        lifetime = azure._lifetime(jwt_with({"exp": time.time() + 1800}))
        assert timedelta(minutes=29) < lifetime <= timedelta(minutes=30)

    def test_lifetime_is_capped(self) -> None:
        """An exp days away is capped at three hours."""
        assert (
            azure._lifetime(jwt_with({"exp": time.time() + 86400 * 3})) == azure.MAX_TOKEN_LIFETIME
        )

    @pytest.mark.parametrize(
        "token", [Secret("opaque"), jwt_with({"exp": time.time() - 10}), jwt_with({"sub": "x"})]
    )
    def test_default_without_a_usable_exp(self, token: Secret) -> None:
        """Opaque, expired or exp-less tokens get the token spec's 60 s default."""
        assert azure._lifetime(token) == timedelta(seconds=60)
