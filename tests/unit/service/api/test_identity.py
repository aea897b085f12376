"""Reading the caller's identity from the certificate gRPC hands a servicer."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pullbroker_service.api.interceptors import INSECURE_IDENTITY, peer_identity_name
from pullbroker_service.domain.errors import Unauthenticated

_KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(*sans: x509.GeneralName, cns: tuple[str, ...] = ("node-x",)) -> bytes:
    """A PEM certificate with exactly these SANs and common names (self-signed: identity
    reading never looks at the chain, which gRPC has verified before a servicer runs)."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")]))
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class AuthContext:
    """The auth_context() of a grpc.aio ServicerContext, as gRPC fills it."""

    def __init__(self, **properties: list[bytes]) -> None:
        self._properties = properties

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._properties


def tls(pem: bytes) -> AuthContext:
    return AuthContext(transport_security_type=[b"ssl"], x509_pem_cert=[pem])


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def name_of(*sans: x509.GeneralName, cns: tuple[str, ...] = ("node-x",)) -> str:
    return peer_identity_name(tls(certificate(*sans, cns=cns)), False)


class TestPeerIdentityName:
    """SPIFFE ID from the one spiffe URI SAN, else CN=<cn>; everything else is refused."""

    def test_spiffe_id_wins_over_cn(self) -> None:
        """A certificate with a SPIFFE ID is known by it, not by its CN."""
        assert name_of(uri("spiffe://td/node/a")) == "spiffe://td/node/a"

    def test_spiffe_id_among_other_sans(self) -> None:
        """DNS SANs beside the one SPIFFE ID do not change the name."""
        assert name_of(x509.DNSName("a.example"), uri("spiffe://td/node/a")) == "spiffe://td/node/a"

    def test_cn_without_spiffe(self) -> None:
        """Without a spiffe URI the name is CN=<cn> (other URIs are ignored)."""
        assert name_of(uri("https://example.com"), cns=("ops",)) == "CN=ops"

    @pytest.mark.parametrize(
        "forged",
        [x509.DNSName("spiffe://td/admin"), x509.RFC822Name("spiffe://td/admin")],
        ids=["dns", "email"],
    )
    def test_other_san_types_never_name_a_spiffe_id(self, forged: x509.GeneralName) -> None:
        """A DNS or e-mail SAN spelled spiffe://…/admin is no SPIFFE ID: the name is the CN."""
        assert name_of(forged) == "CN=node-x"

    def test_scheme_and_trust_domain_are_case_insensitive(self) -> None:
        """SPIFFE://TD/x is spiffe://td/x, and counts toward the one-ID rule."""
        assert name_of(uri("SPIFFE://TD.Example/node/a")) == "spiffe://td.example/node/a"
        with pytest.raises(Unauthenticated, match="several SPIFFE IDs"):
            name_of(uri("spiffe://td/admin"), uri("Spiffe://td/node/a"))

    @pytest.mark.parametrize(
        "spelling",
        [
            "spiffe://pullbroker.local/admin\x00.node/x",
            "spiffe:/pullbroker.local/admin",
            "spiffe://x@pullbroker.local/admin",
            "spiffe://pullbroker.local:443/admin",
            "spiffe://pullbroker.local/admin/",
            "spiffe://pullbroker.local//admin",
            "spiffe://pullbroker.local/./admin",
            "spiffe://pullbroker.local/node/../admin",
            "spiffe://pullbroker.local/ad%6Din",
            "spiffe://pullbroker.local/admin?x=1",
            "spiffe://pullbroker.local/admin#x",
            "spiffe://",
        ],
    )
    def test_malformed_spiffe_ids_refuse_the_certificate(self, spelling: str) -> None:
        """A malformed spiffe URI (a NUL, user, port, odd segments) never falls back to the CN."""
        with pytest.raises(Unauthenticated, match="malformed"):
            name_of(uri(spelling), cns=("admin",))

    @pytest.mark.parametrize("cn", ["admin\x00x", "admin\nx", "\x7fadmin"])
    def test_common_names_with_control_characters_are_refused(self, cn: str) -> None:
        """A CN that gRPC would cut at a NUL (or with any control character) is refused."""
        with pytest.raises(Unauthenticated, match="printable"):
            name_of(cns=(cn,))

    def test_two_common_names_are_refused(self) -> None:
        """A subject with two CNs names no one."""
        with pytest.raises(Unauthenticated, match="exactly one common name"):
            name_of(cns=("admin", "node-x"))

    def test_plaintext_is_refused_unless_dev_port(self) -> None:
        """A plaintext peer is refused, or is insecure-dev when the dev port is on."""
        plaintext = AuthContext(transport_security_type=[b"insecure"])
        with pytest.raises(Unauthenticated, match="mutual TLS"):
            peer_identity_name(plaintext, False)
        assert peer_identity_name(plaintext, True) == INSECURE_IDENTITY

    def test_no_name_at_all_is_refused(self) -> None:
        """A certificate with neither SPIFFE ID nor CN is unauthenticated."""
        with pytest.raises(Unauthenticated):
            name_of(cns=())

    def test_tls_without_a_certificate_is_refused(self) -> None:
        """A TLS peer whose context has no certificate is unauthenticated."""
        with pytest.raises(Unauthenticated, match="client certificate"):
            peer_identity_name(AuthContext(transport_security_type=[b"ssl"]), False)
