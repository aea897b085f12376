"""The sidecar's error tree. Registry and broker failures keep their own classes.

    PullError
    ├── UnsupportedManifest               schema1, or a media type we do not pull
    ├── PlatformNotFound                  the index has no manifest for the platform asked for
    ├── InvalidPlatform                   `--platform` does not parse
    ├── DigestMismatch                    a blob's bytes do not hash to (or size as) its descriptor
    ├── LayoutError                       the destination is not (or cannot become) an OCI layout
    ├── GrantMismatch                     the broker's token is for another repository
    ├── PullCancelled                     another blob failed or the user interrupted the pull
    ├── DestinationError                  dockerd, containerd or the archive file refused the image
    ├── SizeLimitExceeded                 a blob or the image declares more than --max-*-size
    ├── InsufficientSpace                 the store or destination cannot hold what is to come
    └── SidecarError                      the node daemon and its helpers
        ├── DaemonUnavailable             no daemon answers on the socket
        └── SocketInUse                   another daemon already serves that socket

    ClientError                           (pullbroker_client: RegistryError, BrokerCallError,
                                           ConfigurationError) passes through unchanged.

Messages name the image, blob or path and what to check; none carries a token.
"""

from __future__ import annotations


class PullError(Exception):
    """Base of every error the sidecar raises itself."""


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


class SidecarError(PullError):
    """The node daemon (`pullbroker-sidecar run`) or one of its helpers failed."""


class DaemonUnavailable(SidecarError):
    """No daemon answers on the socket (not running, or not ours to talk to)."""


class SocketInUse(SidecarError):
    """Another daemon already listens on the socket path."""
