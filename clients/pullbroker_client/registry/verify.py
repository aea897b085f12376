"""Checking a manifest against its digests, and naming its media type; no HTTP stack here.

Whatever fetches a manifest (today the node's fetcher, the sidecar's pull/fetch.py) verifies
it here: the digest asked for (when the reference is one) and the Docker-Content-Digest the
registry announced must both match the bytes received.
"""

from __future__ import annotations

import hashlib
import re

from pullbroker_client.registry.document import load_object
from pullbroker_client.registry.errors import DigestMismatch, RegistryProtocolError
from pullbroker_client.registry.reference import is_digest


def verified_digest(
    announced: str | None, host: str, reference: str, data: bytes, subject: str
) -> str:
    """The manifest's digest, after checking it against the asked and the announced digest."""
    if announced and not is_digest(announced):
        raise RegistryProtocolError(
            f"registry {host} sent an unusable Docker-Content-Digest for {subject}"
        )
    claims = [d for d in (reference if is_digest(reference) else None, announced) if d]
    for claim in claims:
        algorithm, _, _ = claim.partition(":")
        actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if actual != claim:
            raise digest_mismatch(subject, expected=claim, actual=actual)
    return claims[0] if claims else f"sha256:{hashlib.sha256(data).hexdigest()}"


def digest_mismatch(subject: str, *, expected: str, actual: str) -> DigestMismatch:
    return DigestMismatch(
        f"{subject} does not match its digest: expected {expected}, got {actual};"
        " the registry or something between may be serving altered content",
        expected=expected,
        actual=actual,
    )


_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}")
"""type/subtype of RFC 9110 token characters: nothing else is a media type."""


def manifest_media_type(content_type: str | None, data: bytes) -> str:
    """The declared Content-Type, else the document's own mediaType field; "" when neither
    is a well-formed media type.

    The value is repeated as a Content-Type (the node's mirror, OCI layouts), and a
    manifest's mediaType is whatever its pusher wrote: a CR/LF or a space in it would be a
    header of the pusher's choosing, so only `type/subtype` of token characters passes.
    """
    declared = (content_type or "").partition(";")[0].strip()
    declared = declared if _MEDIA_TYPE.fullmatch(declared) else ""
    if declared and declared not in ("application/json", "text/plain"):
        return declared
    try:
        media_type = load_object(data, "the manifest").get("mediaType")
    except RegistryProtocolError:
        return declared  # the caller's parser reports what is wrong with the document
    if isinstance(media_type, str) and _MEDIA_TYPE.fullmatch(media_type):
        return media_type
    return declared
