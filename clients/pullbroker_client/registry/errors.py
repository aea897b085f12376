"""The registry client's error tree, and the table that turns registry answers into it.

    ClientError                               (pullbroker_client.errors)
    └── RegistryError                         .temporary, .code
        ├── InvalidReference                  an image reference or repository does not parse
        ├── InvalidChallenge                  a WWW-Authenticate header does not parse
        ├── RegistryUnreachable               connect/read failed or timed out   (temporary)
        ├── RegistryTLSError                  handshake or certificate verification failed
        ├── AuthenticationRequired            401 at the registry itself
        ├── CredentialRejected                401/403 from the token endpoint
        ├── NotAllowed                        insufficient_scope, 403, DENIED
        ├── NotFoundError
        │   ├── ManifestUnknown
        │   ├── BlobUnknown
        │   └── NameUnknown                   repository unknown
        ├── RateLimited                       429 / TOOMANYREQUESTS, .retry_after  (temporary)
        ├── DigestMismatch                    content does not hash to the digest asked for
        ├── UnsupportedAuth                   no usable challenge, or an unsafe token realm
        ├── DialRefused                       a host resolves to an address the dial policy refuses
        └── RegistryProtocolError             an answer we cannot use (5xx are temporary)

`.temporary` says whether retrying the same call later may succeed (go-containerregistry's
`Temporary()`); it is a class default that one instance may override (a 503 is temporary, a
400 is not). Messages name the host and what to check, and never carry a secret or a raw body:
only a registry's short `code` and `message` fields, cleaned and truncated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pullbroker_client.errors import ClientError
from pullbroker_client.jsonlimits import loads_bounded

_MAX_CODE = 64
_MAX_MESSAGE = 200


class RegistryError(ClientError):
    """Base of the registry client's errors."""

    temporary: bool = False

    def __init__(self, message: str, *, code: str | None = None, temporary: bool | None = None):
        super().__init__(message)
        self.code = code
        if temporary is not None:
            self.temporary = temporary


class InvalidReference(RegistryError):
    """An image reference, repository name, tag or digest does not follow the grammar."""


class InvalidChallenge(RegistryError):
    """A WWW-Authenticate header does not follow RFC 7235."""


class RegistryUnreachable(RegistryError):
    """The registry (or its token endpoint) could not be reached or did not answer in time."""

    temporary = True


class RegistryTLSError(RegistryError):
    """The TLS handshake failed: untrusted certificate, wrong name, or not TLS at all."""


class AuthenticationRequired(RegistryError):
    """The registry answered 401 even with the best authorization we could get."""


class CredentialRejected(RegistryError):
    """The token endpoint refused the credential (401/403)."""


class NotAllowed(RegistryError):
    """The credential is valid but may not do this (insufficient_scope, 403, DENIED)."""


class NotFoundError(RegistryError):
    """The registry does not have what was asked for."""


class ManifestUnknown(NotFoundError):
    """No manifest under that tag or digest."""


class BlobUnknown(NotFoundError):
    """No blob with that digest in the repository."""


class NameUnknown(NotFoundError):
    """The repository does not exist (or is hidden from this credential)."""


class RateLimited(RegistryError):
    """The registry or token endpoint asked us to slow down."""

    temporary = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class DigestMismatch(RegistryError):
    """Content does not hash to the digest asked for or announced."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class UnsupportedAuth(RegistryError):
    """The registry asks for an auth scheme we do not speak, or names an unsafe token realm."""


class DialRefused(RegistryError):
    """A host (first hop or a redirect's target) resolves to an address the client must not
    dial: link-local, metadata, or outside its dial policy (SSRF). Nothing was sent to it.

    `host` is the refused host, `address` the refused address, `reason` why ("is a loopback
    address"), and `via` the host whose redirect led there ("" for a first hop).
    """

    def __init__(self, *, host: str, address: str, reason: str, via: str = "") -> None:
        self.host, self.address, self.reason, self.via = host, address, reason, via
        resolved = "" if address == host.strip("[]") else f" resolves to {address}, which"
        said = f"{host}{resolved} {reason}: refused"
        super().__init__(f"{via} redirected to {said}" if via else said)

    def redirected_from(self, via: str) -> DialRefused:
        """This refusal, as met on a redirect from `via`."""
        return DialRefused(host=self.host, address=self.address, reason=self.reason, via=via)


class RegistryProtocolError(RegistryError):
    """The registry answered something this client cannot use."""


_BY_CODE: dict[str, type[RegistryError]] = {
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
    "NAME_UNKNOWN": NameUnknown,
    "UNAUTHORIZED": AuthenticationRequired,
    "DENIED": NotAllowed,
    "TOOMANYREQUESTS": RateLimited,
    "NAME_INVALID": InvalidReference,
    "TAG_INVALID": InvalidReference,
}

_BY_STATUS: dict[int, type[RegistryError]] = {
    401: AuthenticationRequired,
    403: NotAllowed,
    429: RateLimited,
}

_TEMPORARY_STATUS = frozenset({408, 500, 502, 503, 504})


# An upstream that echoes the request quotes our Authorization header: whatever follows an auth
# scheme's name is a credential or a token, never something a person needs to read.
_MAX_QUOTED = 64 * 1024  # an error body is bounded before it gets here; this bounds the work
_AUTH_VALUE = re.compile(r"(?i)\b(basic|bearer)(?:\s+|%20|\+)[A-Za-z0-9+/=._~%-]{8,}")


Scrubber = Callable[[str], str]
_scrubbers: list[Scrubber] = []


def install_scrubber(scrub: Scrubber) -> None:
    """Also pass every quoted upstream text through `scrub` (the broker's known-secret
    redaction) before it is cut, so an echoed credential never survives as a prefix."""
    if scrub not in _scrubbers:
        _scrubbers.append(scrub)


def clean(text: str, limit: int) -> str:
    """`text` with control characters dropped, Authorization values blanked, installed
    scrubbers applied to the whole of it, then cut to `limit` characters; the only form in
    which upstream text is quoted in a message."""
    printable = "".join(ch for ch in text[:_MAX_QUOTED] if ch.isprintable())
    printable = _AUTH_VALUE.sub(r"\1 [redacted]", printable)
    for scrub in _scrubbers:
        printable = scrub(printable)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def parse_error_body(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of a registry error body, cleaned; [] when it is not one."""
    try:
        document: Any = loads_bounded(body)
    except ValueError:
        return []
    entries = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    found = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            message = entry.get("message")
            found.append(
                (
                    clean(entry["code"], _MAX_CODE),
                    clean(message, _MAX_MESSAGE) if isinstance(message, str) else "",
                )
            )
    return found


def error_for_response(
    status: int,
    body: bytes,
    *,
    host: str,
    subject: str,
    not_found: type[NotFoundError] = NameUnknown,
    retry_after: float | None = None,
) -> RegistryError:
    """The error for a failed registry answer.

    A known `code` in the body decides the class; otherwise the status does (404 ->
    `not_found`). `subject` says what was asked for ("manifest team/app:1.0").
    """
    codes = parse_error_body(body)
    known = next(((c, m) for c, m in codes if c.upper() in _BY_CODE), None)
    code, detail = known or (codes[0] if codes else (None, ""))
    if known is not None:
        cls = _BY_CODE[known[0].upper()]
    elif status == 404:
        cls = not_found
    else:
        cls = _BY_STATUS.get(status, RegistryProtocolError)
    said = f" ({code}: {detail})" if code and detail else f" ({code})" if code else ""
    message = f"registry {host} answered {status} for {subject}{said}: {_HINTS.get(cls, '')}"
    message = message.rstrip(": ")
    code = code.upper() if code else code  # the machine-readable code; the message keeps it as sent
    if cls is RateLimited:
        return RateLimited(message, retry_after=retry_after, code=code)
    return cls(message, code=code, temporary=True if status in _TEMPORARY_STATUS else None)


_HINTS: dict[type[RegistryError], str] = {
    ManifestUnknown: "check the tag or digest",
    BlobUnknown: "the manifest names a blob the repository does not hold",
    NameUnknown: "check the repository name and that the credential can see it",
    AuthenticationRequired: "the registry wants a credential or a fresh token",
    NotAllowed: "the credential may not pull this repository",
    RateLimited: "slow down and retry later",
    InvalidReference: "check the repository name and tag",
    RegistryProtocolError: "the registry may be failing or this may not be a registry",
}
