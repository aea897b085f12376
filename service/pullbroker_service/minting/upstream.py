"""The registry client's errors as broker errors, and broker errors as probe outcomes.

Messages name the registry record and host and say what to check; the client's own message
(already free of secrets and raw bodies) is kept where it carries the useful detail.
"""

from __future__ import annotations

from pullbroker_client.registry import errors as client

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
from pullbroker_service.domain.model import RegistryRecord


def record_label(record: RegistryRecord) -> str:
    return repr(record.display_name) if record.display_name else "(unsaved)"


def domain_error(
    exc: client.RegistryError, record: RegistryRecord, repository: str, *, anonymous: bool
) -> BrokerError:
    """The broker error for a registry client error met while serving `record`."""
    host, name = record.host, record_label(record)
    if isinstance(exc, client.CredentialRejected | client.AuthenticationRequired):
        if anonymous:
            return CredentialRejected(
                f"registry {host} refused anonymous access for registry {name}: the "
                "repository may be private; register a credential for it"
            )
        return CredentialRejected(
            f"registry {host} rejected the credential of registry {name}: check the username "
            "and password/token"
        )
    if isinstance(exc, client.InvalidReference):
        return InvalidReference(str(exc))
    if isinstance(exc, client.NotAllowed) and anonymous:
        return PullNotAllowed(
            f"anonymous pulls of {repository or 'this repository'} from {host} are not "
            f"allowed (registry {name}): the repository may be private; register a credential"
        )
    if isinstance(exc, client.NotAllowed):
        return PullNotAllowed(
            f"the credential of registry {name} may not pull {repository or 'this repository'} "
            f"from {host}: grant it pull access"
        )
    if isinstance(exc, client.NotFoundError):
        return ImageNotFound(f"registry {name}: {exc}")
    if isinstance(exc, client.RateLimited):
        return RateLimited(
            f"registry {host} is rate limiting requests for registry {name}: retry later",
            retry_after=exc.retry_after,
        )
    if isinstance(exc, client.RegistryUnreachable):
        return RegistryUnreachable(f"registry {name}: {exc}")
    if isinstance(exc, client.RegistryTLSError):
        return RegistryTLSFailure(f"registry {name}: {exc}")
    return UpstreamProtocolError(f"registry {name}: {exc}")


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
