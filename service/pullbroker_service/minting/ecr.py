"""Amazon ECR: an access key pair (optionally a role to assume) -> a 12-hour Basic password.

ECR has no repository-scoped tokens: `ecr:GetAuthorizationToken` returns base64
"AWS:<password>", valid 12 hours for every repository the calling principal may read. So:

- Without a role ARN the token can do whatever the access key can do in ECR. Give the key
  only pull permissions (`AmazonEC2ContainerRegistryReadOnly` or narrower).
- With a role ARN the broker calls STS AssumeRole with an inline session policy allowing only
  `ecr:GetAuthorizationToken` and the three pull actions (`BatchGetImage`,
  `GetDownloadUrlForLayer`, `BatchCheckLayerAvailability`) on the ARN of the one repository
  asked for, for 900 seconds (STS's minimum), and fetches the token with those session
  credentials. The token carries the session's permissions - the intersection of the role's
  policies and the session policy - so it pulls that repository and nothing else, and it is
  treated as living no longer than the session. That is the narrowest token ECR can issue.
  Because such a token is per repository, the coalescing key includes the repository.

GetAuthorizationToken is limited to 20 calls per second per account and region, so calls are
coalesced (concurrent mints for one key share one call) and paced by a token bucket per
(registry account, region). boto3 is synchronous: calls run in a worker thread. The clients
get an explicit endpoint (None: AWS's regional one; AWS_ENDPOINT_URL* is ignored) and an
explicit `verify` (AWS_CA_BUNDLE is set machine-wide and must not decide trust).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.exceptions
import structlog
from botocore.config import Config
from pullbroker_client.registry.errors import RegistryError
from pullbroker_client.registry.reference import check_repository
from pullbroker_client.secret import Secret

from pullbroker_service.domain.cloud_kinds import EcrHost, parse_ecr_host
from pullbroker_service.domain.errors import (
    BrokerError,
    CredentialRejected,
    InvalidArgument,
    InvalidReference,
    InvalidRegistry,
    PullNotAllowed,
    RateLimited,
    RegistryTLSFailure,
    RegistryUnreachable,
    UpstreamError,
    UpstreamProtocolError,
)
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    Credential,
    MintedToken,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.coalesce import SingleFlight, TokenBucket
from pullbroker_service.minting.upstream import probe_outcome, record_label

_log = structlog.get_logger(__name__)

TOKEN_LIFETIME = timedelta(hours=12)
# An expiry that is already past (moto always answers 2015-01-01; a real answer would mean
# our clock is half a day off) cannot be trusted: the token is handed to this one caller, who
# asked for it just now and for whom AWS's clock says it is valid, but with this lifetime, so
# no cache or node keeps relying on a date we know is wrong.
UNTRUSTED_EXPIRY_LIFETIME = timedelta(seconds=60)
PULL_ACTIONS = (
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
)
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")


@dataclass(frozen=True)
class EcrConfig:
    """How the ECR minter reaches AWS."""

    endpoint_url: str | None = None
    """ECR API endpoint (tests: the moto server); None means AWS's endpoint for the region."""
    sts_endpoint_url: str | None = None
    """STS endpoint for AssumeRole; None means the regional STS endpoint."""
    ca_bundle: str | None = None
    """CA bundle file for the AWS APIs; None means botocore's bundled public CAs."""
    role_session_seconds: int = 900
    """Lifetime of an assumed-role session (STS allows 900 at least)."""
    calls_per_second: float = 10.0
    """GetAuthorizationToken pace per account and region (ECR allows 20; other tools share it)."""
    burst: int = 5
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class AwsKeys:
    """Credentials for one boto3 client: long-lived keys, or a session's temporary ones."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


ClientFactory = Callable[[str, str, AwsKeys, bool], Any]
"""(service "ecr"|"sts", region, keys, fips) -> boto3 client. Tests may wrap the default."""


def boto3_client_factory(config: EcrConfig) -> ClientFactory:
    """The default factory: boto3 clients with explicit endpoint, trust and timeouts."""
    lock = threading.Lock()  # boto3 sessions are not thread-safe; their clients are.

    def make(service: str, region: str, keys: AwsKeys, fips: bool) -> Any:
        endpoint = config.endpoint_url if service == "ecr" else config.sts_endpoint_url
        client_config = Config(
            region_name=region,
            use_fips_endpoint=fips,
            connect_timeout=config.timeout_seconds,
            read_timeout=config.timeout_seconds,
            retries={"mode": "standard", "max_attempts": 3},
            ignore_configured_endpoint_urls=True,
            user_agent_extra="pullbroker",
        )
        with lock:
            session = boto3.session.Session(
                aws_access_key_id=keys.access_key_id,
                aws_secret_access_key=keys.secret_access_key,
                aws_session_token=keys.session_token,
                region_name=region,
            )
            return session.client(
                service,
                endpoint_url=endpoint,
                verify=config.ca_bundle or True,
                config=client_config,
            )

    return make


def session_policy(target: EcrHost, repository: str) -> str:
    """The inline session policy: get a token, and pull only `repository`."""
    arn = f"arn:{target.partition}:ecr:{target.region}:{target.account}:repository/{repository}"
    # GetAuthorizationToken has no resource-level permissions: "*" is the only form.
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
    ]
    if repository:  # a probe without a repository only proves a token can be had
        statements.append({"Effect": "Allow", "Action": list(PULL_ACTIONS), "Resource": arn})
    document = {"Version": "2012-10-17", "Statement": statements}
    return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True)
class _Request:
    target: EcrHost
    keys: AwsKeys
    role_arn: str
    repository: str


@dataclass(frozen=True)
class _Grant:
    username: str
    password: str = field(repr=False)
    expires_at: datetime | None
    session_expires_at: datetime | None


class EcrMinter:
    """Minter for kind ecr."""

    def __init__(
        self, config: EcrConfig | None = None, *, client_factory: ClientFactory | None = None
    ) -> None:
        self._config = config or EcrConfig()
        self._clients = client_factory or boto3_client_factory(self._config)
        self._flights: SingleFlight[_Grant] = SingleFlight()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        """A Basic credential (user AWS) that pulls `repository` (only it, with a role ARN)."""
        request = _request(registry, credential, repository)
        issued_at = datetime.now(UTC)
        grant = await self._flights.run(
            _flight_key(request), lambda: self._paced(request, lambda: self._grant(request))
        )
        return MintedToken(
            auth_kind=AuthKind.BASIC,
            username=grant.username,
            token=Secret(grant.password),
            scope=pull_scope(request.repository),
            issued_at=issued_at,
            expires_at=_expiry(grant, issued_at, registry.host),
            repository=repository,
        )

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        """Get a token, then ask ECR whether these credentials may pull `repository`."""
        started = time.monotonic()
        try:
            request = _request(registry, credential, repository)
            await self._paced(request, lambda: self._check_pull(request))
        except InvalidArgument:
            raise
        except BrokerError as exc:
            return probe_failure(exc, time.monotonic() - started, "basic")
        what = f"allows pulling {repository}" if repository else "issued a token"
        return ProbeResult("ok", f"ECR {registry.host} {what}", time.monotonic() - started, "basic")

    async def _paced(self, request: _Request, work: Callable[[], Any]) -> Any:
        key = (request.target.account, request.target.region)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(
                self._config.calls_per_second, self._config.burst
            )
        await bucket.acquire()
        return await asyncio.to_thread(work)

    def _session_keys(self, request: _Request) -> tuple[AwsKeys, datetime | None]:
        """The keys to call ECR with: the stored ones, or an assumed role's session."""
        if not request.role_arn:
            return request.keys, None
        sts = self._clients("sts", request.target.region, request.keys, request.target.fips)
        try:
            answer = sts.assume_role(
                RoleArn=request.role_arn,
                RoleSessionName=_session_name(request.repository),
                Policy=session_policy(request.target, request.repository),
                DurationSeconds=self._config.role_session_seconds,
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise aws_error(exc, "STS", request.target.region) from exc
        except botocore.exceptions.ClientError as exc:
            raise aws_error(exc, f"STS AssumeRole of {request.role_arn}", "") from exc
        session = answer["Credentials"]
        keys = AwsKeys(session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
        return keys, _utc(session.get("Expiration"))

    def _grant(self, request: _Request) -> _Grant:
        keys, session_expires_at = self._session_keys(request)
        ecr = self._clients("ecr", request.target.region, keys, request.target.fips)
        try:
            answer = ecr.get_authorization_token()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise aws_error(exc, "ECR GetAuthorizationToken", request.target.region) from exc
        data = answer.get("authorizationData") or []
        if not data or not isinstance(data[0].get("authorizationToken"), str):
            raise UpstreamProtocolError("ECR answered GetAuthorizationToken without a token")
        username, password = _decode_token(data[0]["authorizationToken"])
        return _Grant(username, password, _utc(data[0].get("expiresAt")), session_expires_at)

    def _check_pull(self, request: _Request) -> None:
        keys, _ = self._session_keys(request)
        ecr = self._clients("ecr", request.target.region, keys, request.target.fips)
        try:
            ecr.get_authorization_token()
            if request.repository:
                ecr.batch_get_image(
                    registryId=request.target.account,
                    repositoryName=request.repository,
                    imageIds=[{"imageTag": "latest"}],
                )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = aws_error(exc, "ECR", request.target.region)
            if _error_code(exc) == "RepositoryNotFoundException":
                error = PullNotAllowed(
                    f"ECR registry {request.target.account} in {request.target.region} has no "
                    f"repository {request.repository}, or these credentials cannot see it"
                )
            raise error from exc


def _request(registry: RegistryRecord, credential: Credential | None, repository: str) -> _Request:
    if not isinstance(credential, AwsCredential):
        raise InvalidRegistry(
            f"registry {record_label(registry)} (ecr) needs an aws credential: update it with "
            "an access key id and secret"
        )
    target = parse_ecr_host(registry.host)
    if registry.region and registry.region != target.region:
        raise InvalidRegistry(
            f"registry {record_label(registry)} has region {registry.region} but its host is "
            f"in {target.region}: fix the record"
        )
    keys = AwsKeys(credential.access_key_id, credential.secret_access_key.reveal())
    checked = check_repository_name(repository) if repository else ""
    return _Request(target, keys, credential.role_arn, checked)


def _flight_key(request: _Request) -> tuple[str, ...]:
    # The secret is part of the key (as a digest) so a rotated secret never joins a call
    # made with the old one; the repository only matters when a session policy names it.
    fingerprint = hashlib.sha256(request.keys.secret_access_key.encode()).hexdigest()[:32]
    return (
        request.target.account,
        request.target.region,
        str(request.target.fips),
        request.keys.access_key_id,
        fingerprint,
        request.role_arn,
        request.repository if request.role_arn else "",
    )


def _session_name(repository: str) -> str:
    # Shows in CloudTrail next to the assumed role: say who and for what.
    return ("pullbroker-" + _SESSION_NAME_UNSAFE.sub("-", repository)).rstrip("-")[:64]


def _decode_token(token: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise UpstreamProtocolError(
            "ECR answered a token that is not base64 user:password"
        ) from None
    username, sep, password = text.partition(":")
    if not sep or not username or not password:
        raise UpstreamProtocolError("ECR answered a token that is not base64 user:password")
    return username, password


def _expiry(grant: _Grant, issued_at: datetime, host: str) -> datetime:
    """ECR's expiry, no later than 12 hours nor than the role session's end."""
    candidates = [issued_at + TOKEN_LIFETIME]
    candidates += [t for t in (grant.expires_at, grant.session_expires_at) if t is not None]
    expires_at = min(candidates)
    if expires_at <= issued_at + UNTRUSTED_EXPIRY_LIFETIME:
        _log.warning(
            "ecr_token_expiry_untrusted",
            host=host,
            reported_expiry=expires_at.isoformat(),
            lifetime_seconds=UNTRUSTED_EXPIRY_LIFETIME.total_seconds(),
        )
        expires_at = issued_at + UNTRUSTED_EXPIRY_LIFETIME
    return expires_at


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _error_code(exc: Exception) -> str:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return ""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code.isdigit():
        # Some endpoints (moto among them) answer a JSON-protocol call with an XML error
        # body, which botocore reports as the bare HTTP status: the name is inside.
        found = _XML_CODE.search(str(error.get("Message", "")))
        code = found.group(1) if found else code
    return code


_XML_CODE = re.compile(r"<Code>(\w+)</Code>")
_REJECTED = frozenset(
    [
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    ]
)
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_THROTTLED = frozenset(
    ["ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"]
)
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


def aws_error(exc: Exception, call: str, region: str) -> UpstreamError:
    """The domain error for a failed AWS call; names the call, never the AWS message."""
    where = f" in {region}" if region else ""
    if isinstance(exc, botocore.exceptions.SSLError):
        return RegistryTLSFailure(
            f"TLS to AWS for {call}{where} failed: check the broker's AWS CA bundle setting"
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        if isinstance(exc, _UNREACHABLE):
            return RegistryUnreachable(
                f"could not reach AWS for {call}{where}: check network access to the endpoint"
            )
        return UpstreamProtocolError(f"calling AWS for {call}{where} failed ({type(exc).__name__})")
    code = _error_code(exc)
    if code in _REJECTED:
        return CredentialRejected(
            f"AWS rejected the access key for {call}{where} ({code}): check the access key id "
            "and secret, and that the key is active"
        )
    if code in _DENIED:
        return PullNotAllowed(
            f"AWS denied {call}{where} ({code}): grant the key (or role) "
            "ecr:GetAuthorizationToken and pull on the repository; for a role, check that its "
            "trust policy lets the key assume it"
        )
    if code in _THROTTLED:
        return RateLimited(f"AWS is throttling {call}{where} ({code}): retry shortly", 1.0)
    return UpstreamProtocolError(f"AWS answered {call}{where} with error {code or 'unknown'}")


def probe_failure(exc: BrokerError, latency: float, auth_scheme: str) -> ProbeResult:
    """A failed probe as a ProbeResult; a rate limit says when to retry."""
    message = str(exc)
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        message += f" (retry after {exc.retry_after:g} s)"
    return ProbeResult(probe_outcome(exc), message, latency, auth_scheme)


def check_repository_name(repository: str) -> str:
    """The repository, if it is a valid Docker repository path; it goes into an IAM ARN."""
    try:
        return check_repository(repository)
    except RegistryError as exc:
        raise InvalidReference(str(exc)) from None
