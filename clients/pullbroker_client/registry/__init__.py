"""OCI/Docker distribution client: references, challenges, token auth, manifests, blobs.

reference.py   parse_reference -> Reference (Docker's grammar and normalisation)
challenge.py   parse_www_authenticate -> [Challenge]
errors.py      RegistryError tree (drawn there), registry error bodies -> classes
transport.py   ssl_context, Transport: explicit TLS trust, manual redirects, error mapping
auth.py        ping, fetch_token -> BearerToken, basic_authorization
client.py      RegistryClient (get_manifest, head_manifest, stream_blob), Authorizer
mediatypes.py  OCI and Docker media types
"""

from pullbroker_client.registry.auth import BearerToken, basic_authorization, fetch_token, ping
from pullbroker_client.registry.challenge import (
    Challenge,
    format_challenges,
    parse_www_authenticate,
)
from pullbroker_client.registry.client import Authorizer, Manifest, ManifestInfo, RegistryClient
from pullbroker_client.registry.errors import (
    AuthenticationRequired,
    BlobUnknown,
    CredentialRejected,
    DigestMismatch,
    InvalidChallenge,
    InvalidReference,
    ManifestUnknown,
    NameUnknown,
    NotAllowed,
    NotFoundError,
    RateLimited,
    RegistryError,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
    UnsupportedAuth,
)
from pullbroker_client.registry.reference import Reference, parse_reference
from pullbroker_client.registry.transport import Transport, ssl_context

__all__ = [
    "AuthenticationRequired",
    "Authorizer",
    "BearerToken",
    "BlobUnknown",
    "Challenge",
    "CredentialRejected",
    "DigestMismatch",
    "InvalidChallenge",
    "InvalidReference",
    "Manifest",
    "ManifestInfo",
    "ManifestUnknown",
    "NameUnknown",
    "NotAllowed",
    "NotFoundError",
    "RateLimited",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryProtocolError",
    "RegistryTLSError",
    "RegistryUnreachable",
    "Transport",
    "UnsupportedAuth",
    "basic_authorization",
    "fetch_token",
    "format_challenges",
    "parse_reference",
    "parse_www_authenticate",
    "ping",
    "ssl_context",
]
