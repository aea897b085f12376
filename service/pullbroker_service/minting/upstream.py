"""The registry client's errors as broker errors, and broker errors as probe outcomes.

Messages name the registry record and host and say what to check; the client's own message
(already free of secrets and raw bodies) is kept where it carries the useful detail. A kind
may add its own advice (`Hints`): what a GHCR PAT needs, how a Harbor robot is spelled.

The same mapping serves minting, TestConnection and pull failures, so a person can tell
"authentication required" (the registry refused the credential or the token) from "not
allowed" (authenticated, but no pull on that repository) from "image not found after
successful authentication" (host, namespace case, tag).
"""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_client.registry import errors as registry_errors

from pullbroker_service.domain.errors import (
    BasicNotAllowed,
    BrokerError,
    CredentialRejected,
    ImageNotFound,
    InvalidReference,
    PullNotAllowed,
    RateLimited,
    RegistryTLSFailure,
    RegistryUnreachable,
    UpstreamProtocolError,
)
from pullbroker_service.domain.hosts import refused
from pullbroker_service.domain.model import RegistryRecord


@dataclass(frozen=True)
class Hints:
    """What a person should check, per failure, for one registry kind."""

    rejected: str = "check the username and password/token"
    not_allowed: str = "grant it pull access"
    not_found: str = "check the host, the repository's namespace and its case, and the tag"


DEFAULT_HINTS = Hints()


def record_label(record: RegistryRecord) -> str:
    return repr(record.display_name) if record.display_name else "(unsaved)"


def domain_error(
    exc: registry_errors.RegistryError,
    record: RegistryRecord,
    repository: str,
    *,
    anonymous: bool,
    hints: Hints = DEFAULT_HINTS,
) -> BrokerError:
    """The broker error for a registry client error met while serving `record`."""
    host, name = record.host, record_label(record)
    subject = repository or "this repository"
    if isinstance(exc, registry_errors.CredentialRejected | registry_errors.AuthenticationRequired):
        return _rejected(exc, host, name, anonymous, hints)
    if isinstance(exc, registry_errors.InvalidReference):
        return InvalidReference(str(exc))
    if isinstance(exc, registry_errors.DialRefused):
        return _dial_refused(exc, name)
    if isinstance(exc, registry_errors.NotAllowed) and anonymous:
        return PullNotAllowed(
            f"anonymous pulls of {subject} from {host} are not allowed (registry {name}): "
            "the repository may be private, or may not exist; register a credential"
        )
    if isinstance(exc, registry_errors.NotAllowed):
        return PullNotAllowed(
            f"the credential of registry {name} may not pull {subject} from {host}: "
            f"{hints.not_allowed}"
        )
    if isinstance(exc, registry_errors.NotFoundError):
        return ImageNotFound(
            f"image not found after successful authentication (registry {name}): {exc}; "
            f"{hints.not_found}"
        )
    if isinstance(exc, registry_errors.RateLimited):
        return RateLimited(
            f"registry {host} is rate limiting requests for registry {name}: retry later",
            retry_after=exc.retry_after,
        )
    if isinstance(exc, registry_errors.RegistryUnreachable):
        return RegistryUnreachable(f"registry {name}: {exc}")
    if isinstance(exc, registry_errors.RegistryTLSError):
        return RegistryTLSFailure(f"registry {name}: {exc}")
    return UpstreamProtocolError(f"registry {name}: {exc}")


def _dial_refused(exc: registry_errors.DialRefused, name: str) -> BrokerError:
    """The registry's own host is a bad record (INVALID_ARGUMENT, naming the setting that
    allows it); a redirect to a refused address is the registry misbehaving."""
    if not exc.via:
        return refused("registry url", exc.host, exc.address, exc.reason)
    return UpstreamProtocolError(
        f"registry {name}: {exc}; the broker follows no redirect to an address it must not dial"
    )


def refused_realm(
    exc: registry_errors.DialRefused, record: RegistryRecord
) -> UpstreamProtocolError:
    """The error for a token realm (or a redirect from it) the dial guard refused."""
    detail = exc if exc.via else refused("token realm", exc.host, exc.address, exc.reason)
    return UpstreamProtocolError(
        f"registry {record.host} names a token realm the broker must not dial: {detail}"
    )


def _rejected(
    exc: registry_errors.RegistryError, host: str, name: str, anonymous: bool, hints: Hints
) -> CredentialRejected:
    if anonymous:
        return CredentialRejected(
            f"registry {host} refused anonymous access for registry {name}: the "
            "repository may be private; register a credential for it"
        )
    if isinstance(exc, registry_errors.AuthenticationRequired):
        # 401 at the registry itself while presenting a token it issued: the token, not
        # necessarily the stored credential, is what it refused.
        return CredentialRejected(
            f"registry {host} requires authentication and refused the token of registry "
            f"{name} (expired or revoked): ask for a fresh token; if that fails too, "
            f"{hints.rejected}"
        )
    return CredentialRejected(
        f"registry {host} rejected the credential of registry {name}: {hints.rejected}"
    )


_OUTCOMES: dict[type[BrokerError], str] = {
    CredentialRejected: "credential_rejected",
    PullNotAllowed: "not_allowed",
    RegistryUnreachable: "unreachable",
    RegistryTLSFailure: "tls_failure",
    RateLimited: "rate_limited",
    BasicNotAllowed: "unsupported_auth",
    UpstreamProtocolError: "unsupported_auth",
}


def probe_outcome(exc: BrokerError) -> str:
    """The ProbeResult outcome for an error (most specific class wins)."""
    return next((_OUTCOMES[c] for c in type(exc).__mro__ if c in _OUTCOMES), "unsupported_auth")


def classify_pull_failure(
    exc: registry_errors.RegistryError,
    record: RegistryRecord,
    repository: str,
    *,
    anonymous: bool = False,
    hints: Hints = DEFAULT_HINTS,
) -> tuple[str, BrokerError]:
    """(outcome, error) for a failure met while pulling with a minted token.

    outcome is a probe outcome, or "not_found" when authentication worked but the image
    (repository, tag or digest) is not there.
    """
    error = domain_error(exc, record, repository, anonymous=anonymous, hints=hints)
    if isinstance(error, ImageNotFound):
        return "not_found", error
    return probe_outcome(error), error
