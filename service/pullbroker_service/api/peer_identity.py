"""Who a client certificate names: its one SPIFFE ID (URI SAN), else its CN; nothing else.

Read from the certificate itself (`x509_pem_cert` in gRPC's auth context), not from gRPC's
name properties: those are C strings, so a URI SAN `spiffe://td/admin\\x00.node` or a CN
`admin\\x00x` arrives cut at the NUL as `spiffe://td/admin` / `admin` (the NUL-prefix attack
on CAs that check requested names by suffix or glob), and `peer_identities()` mixes every SAN
type, so a DNS SAN spelled `spiffe://…` passes for a SPIFFE ID.

Rules (the SPIFFE ID spec, strictly):
- URI SANs whose scheme is `spiffe` (any case) are SPIFFE IDs. More than one, or one that is
  not a well-formed ID, refuses the certificate: it never falls back to the CN.
- A well-formed ID: `spiffe://` + trust domain (lower case letters, digits, `.`, `-`, `_`;
  no user, no port) + a path of segments of letters, digits, `.`, `-`, `_` (no empty, `.` or
  `..` segment, no trailing slash), no query, no fragment, no percent-encoding. The scheme
  and trust domain compare case-insensitively and are lower-cased.
- Without a SPIFFE ID, exactly one CN of printable ASCII; the name is `CN=<cn>`.

Parsing a certificate costs ~50 µs, so answers are remembered per certificate (PEM bytes).
"""

from __future__ import annotations

import re
from collections import OrderedDict

from cryptography import x509
from cryptography.x509.oid import NameOID

from pullbroker_service.domain.errors import Unauthenticated
from pullbroker_service.domain.identity import identity_name

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
_MAX_REMEMBERED = 4096
_remembered: OrderedDict[bytes, str] = OrderedDict()


def identity_of_certificate(pem: bytes) -> str:
    """The policy name of the certificate in `pem`; Unauthenticated (saying why) if none."""
    name = _remembered.get(pem)
    if name is not None:
        return name
    name = _identity(pem)
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.popitem(last=False)
    _remembered[pem] = name
    return name


def _identity(pem: bytes) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("the client certificate cannot be read") from None
    spiffe_ids = [spiffe_id(uri) for uri in _uri_sans(cert) if _is_spiffe(uri)]
    if len(spiffe_ids) > 1:
        raise Unauthenticated(
            "the client certificate has several SPIFFE IDs: issue it with exactly one"
        )
    if spiffe_ids:
        return spiffe_ids[0]
    return identity_name(None, _common_name(cert))


def spiffe_id(uri: str) -> str:
    """`uri` as a SPIFFE ID (scheme and trust domain lower-cased); Unauthenticated if malformed."""
    scheme, sep, rest = uri.partition("://")
    domain, slash, path = rest.partition("/")
    domain = domain.lower()
    segments = path.split("/") if slash else []
    if (
        scheme.lower() != "spiffe"
        or not sep
        or not _TRUST_DOMAIN.fullmatch(domain)
        or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)
    ):
        raise Unauthenticated(
            "the client certificate's SPIFFE ID is malformed (spiffe://TRUST-DOMAIN/PATH with "
            "letters, digits, '.', '-', '_' only): reissue it"
        )
    return f"spiffe://{domain}{slash}{path}"


def _is_spiffe(uri: str) -> bool:
    return uri[:7].lower() == "spiffe:"


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)]


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    values = [n.value if isinstance(n.value, str) else n.value.decode("latin-1") for n in names]
    if len(values) > 1 or not _PRINTABLE_ASCII.fullmatch(values[0]):
        raise Unauthenticated(
            "the client certificate's subject needs exactly one common name of printable "
            "ASCII: reissue it"
        )
    return values[0]
