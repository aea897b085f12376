"""The sidecar's error tree. Registry and broker failures keep their own classes.

    SidecarError                          base of every error the sidecar raises itself
    ├── InvalidOption                     a flag or option value is wrong (names the flag)
    ├── PullError                         pulling an image failed
    │   ├── UnsupportedManifest           schema1, or a media type we do not pull
    │   ├── PlatformNotFound              the index has no manifest for the platform asked for
    │   ├── InvalidPlatform               `--platform` does not parse
    │   ├── DigestMismatch                a blob's bytes do not hash to (or size as) its descriptor
    │   ├── LayoutError                   the destination is not (or cannot become) an OCI layout
    │   ├── GrantMismatch                 the broker's token is for another repository
    │   ├── PullCancelled                 another blob failed or the user interrupted the pull
    │   ├── DestinationError              dockerd, containerd or the archive file refused the image
    │   ├── SizeLimitExceeded             a blob or the image declares more than --max-*-size
    │   └── InsufficientSpace             the store or destination cannot hold what is to come
    ├── DaemonError                       the node daemon and its socket
    │   ├── DaemonUnavailable             no daemon answers on the socket
    │   ├── SocketInUse                   another daemon already serves that socket
    │   └── NoLogin (daemon/login_cache.py)  no login for that request; .code is the protocol's
    ├── PassthroughRefused                a helper would have written a long-lived credential
    └── MirrorRefusal                     what the node mirror answers instead of content:
                                          .status, .code (OCI error code), .retry_after

    ClientError                           (pullbroker_client: RegistryError, BrokerCallError,
                                           ConfigurationError) passes through unchanged.

Messages name the image, blob or path and what to check; none carries a token.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error the sidecar raises itself."""


class InvalidOption(SidecarError):
    """A flag or option value is wrong; the message names the flag."""


class PassthroughRefused(SidecarError):
    """A helper was handed a registry's long-lived credential, which it must not write."""


class PullError(SidecarError):
    """Pulling an image failed."""


class UnsupportedManifest(PullError):
    """The registry served a manifest format the sidecar does not pull."""


class PlatformNotFound(PullError):
    """An image index has no manifest for the requested platform."""


class InvalidPlatform(PullError):
    """A platform string is not `os/arch[/variant]`."""


class DigestMismatch(PullError):
    """A blob's content does not match its descriptor; nothing was committed."""

    def __init__(self, message: str, *, digest: str, actual: str, size: int) -> None:
        super().__init__(message)
        self.digest = digest
        self.actual = actual
        self.size = size


class LayoutError(PullError):
    """The destination cannot be used as an OCI image layout."""


class GrantMismatch(PullError):
    """The broker answered with a token for a repository other than the one asked for."""


class PullCancelled(PullError):
    """A download stopped because the pull as a whole failed or was interrupted."""


class DestinationError(PullError):
    """The destination (dockerd, containerd, an archive file) could not take the image."""


class SizeLimitExceeded(PullError):
    """A manifest declares a blob or an image larger than the configured limit."""


class InsufficientSpace(PullError):
    """The file system of the store or the destination has less free space than needed."""


class DaemonError(SidecarError):
    """The node daemon (`pullbroker-sidecar run`) or its socket failed."""


class DaemonUnavailable(DaemonError):
    """No daemon answers on the socket (not running, or not ours to talk to)."""


class SocketInUse(DaemonError):
    """Another daemon already listens on the socket path."""


class MirrorRefusal(SidecarError):
    """The node mirror answers with an OCI error instead of content (mirror/answers.py).

    `status` is the HTTP status, `code` the OCI error code (DENIED, BLOB_UNKNOWN, ...),
    `retry_after` the seconds a runtime should wait (429 and 503 only).
    """

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
