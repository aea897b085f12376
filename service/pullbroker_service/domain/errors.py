"""The broker's error tree. Adapters raise these `from` their vendor's exceptions.

BrokerError
├── InvalidArgument                   bad input the caller can fix
│   ├── InvalidReference              image reference does not parse
│   ├── InvalidRegistry               registry fields fail their kind's validation
│   └── HostMismatch                  image host is not the credential's host
├── NotFound
│   ├── RegistryNotFound
│   ├── DeploymentNotFound
│   └── ImageNotFound                 repository, tag or digest unknown (after auth worked)
├── AlreadyExists
├── EtagMismatch                      concurrent update: re-read and retry
├── FailedPrecondition
│   ├── StillReferenced               deployments still use the registry
│   ├── AmbiguousRegistry             several records serve the image's host
│   ├── BasicNotAllowed               Basic-only registry without pass-through allowed
│   ├── InvalidTransition             a deployment status change that cannot happen now
│   ├── BackendMismatch               records reference a secret backend other than the
│   │                                 configured one (an unfinished migration)
│   └── HomeInUse                     a broker or a migration already holds the home folder
├── PermissionDenied
│   ├── IdentityNotAllowed            policy denies this identity the method
│   ├── ScopeNotAllowed               policy denies this identity the registry/repository
│   ├── TargetNotAllowed              policy denies this identity the deployment target
│   ├── NotOwner                      only the creator or an owner group may delete it
│   └── BackendPermissionDenied       the secret backend refused the BROKER's own identity
│                                     (its Vault policy / IAM role): an operator must fix
│                                     that, so the API answers FAILED_PRECONDITION
├── Unauthenticated                   no usable client identity
├── QuotaExceeded                     a per-identity rate limit: retry after retry_after seconds
├── UpstreamError                     the registry or its token endpoint
│   ├── CredentialRejected            the registry refused the stored credential
│   ├── PullNotAllowed                credential valid but lacks pull on the repository
│   ├── RegistryUnreachable
│   ├── RegistryTLSFailure
│   ├── RateLimited                   retry_after seconds
│   └── UpstreamProtocolError         the registry answered something we cannot use
├── BackendUnavailable                secret or metadata backend unreachable
│   └── SchemaTooNew                  a database was migrated by a newer broker: upgrade
├── SecretMissing                     a reference points at nothing (internal state error)
├── SecretCorrupted                   a stored secret fails authentication (tampered,
│                                     copied to another record, or the wrong KEK)
├── InvalidPolicy                     policy.yaml does not validate (names the rule)
├── ConfigError (config/errors.py)    the config file or a flag is wrong (names which)
└── StartupError                      the broker cannot start as configured
    ├── ListenFailed                  the listen address is taken or not ours to bind
    └── DevCAError (bootstrap/devca)  the home folder's development CA cannot be used
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises. Messages are for a person and never hold secrets."""


class InvalidArgument(BrokerError):
    pass


class InvalidReference(InvalidArgument):
    pass


class InvalidRegistry(InvalidArgument):
    pass


class HostMismatch(InvalidArgument):
    pass


class NotFound(BrokerError):
    pass


class RegistryNotFound(NotFound):
    pass


class DeploymentNotFound(NotFound):
    pass


class ImageNotFound(NotFound):
    pass


class AlreadyExists(BrokerError):
    pass


class EtagMismatch(BrokerError):
    """A conditional write lost to another writer; `current_etag`, when known, is the etag
    the record has now (a caller may re-read, or retry against it)."""

    def __init__(self, message: str, current_etag: str | None = None) -> None:
        super().__init__(message)
        self.current_etag = current_etag


class FailedPrecondition(BrokerError):
    pass


class StillReferenced(FailedPrecondition):
    pass


class AmbiguousRegistry(FailedPrecondition):
    pass


class BasicNotAllowed(FailedPrecondition):
    pass


class InvalidTransition(FailedPrecondition):
    pass


class BackendMismatch(FailedPrecondition):
    pass


class HomeInUse(FailedPrecondition):
    pass


class MigrationMismatch(FailedPrecondition):
    """A copy read back differs from its original (`pullbroker secrets migrate
    --to-database`); the message names what differs."""


class PermissionDenied(BrokerError):
    pass


class IdentityNotAllowed(PermissionDenied):
    pass


class ScopeNotAllowed(PermissionDenied):
    pass


class TargetNotAllowed(PermissionDenied):
    pass


class NotOwner(PermissionDenied):
    pass


class QuotaExceeded(BrokerError):
    """A caller went over its per-identity rate limit; `retry_after` says when it may retry."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendPermissionDenied(PermissionDenied):
    """Vault or AWS refused the broker itself. Not the caller's fault, and PERMISSION_DENIED
    would tell the caller its own identity lacks rights, so the API maps it elsewhere."""


class Unauthenticated(BrokerError):
    pass


class UpstreamError(BrokerError):
    pass


class CredentialRejected(UpstreamError):
    pass


class PullNotAllowed(UpstreamError):
    pass


class RegistryUnreachable(UpstreamError):
    pass


class RegistryTLSFailure(UpstreamError):
    pass


class RateLimited(UpstreamError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamProtocolError(UpstreamError):
    pass


class BackendUnavailable(BrokerError):
    def __init__(self, message: str, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SchemaTooNew(BackendUnavailable):
    """A database (SQLite file or PostgreSQL) holds a schema newer than this broker knows:
    a newer broker migrated it. Retrying cannot help; the broker must be upgraded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=None)


class SecretMissing(BrokerError):
    pass


class SecretCorrupted(BrokerError):
    pass


class InvalidPolicy(BrokerError):
    pass


class StartupError(BrokerError):
    """The broker cannot start as configured; the message says what to change."""


class ListenFailed(StartupError):
    """The listen address cannot be bound (another process holds it, or it is not ours)."""
