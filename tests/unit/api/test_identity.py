"""Reading the caller's identity from the TLS auth context gRPC hands a servicer."""

from __future__ import annotations

import pytest
from pullbroker_service.api.interceptors import INSECURE_IDENTITY, peer_identity_name
from pullbroker_service.domain.errors import Unauthenticated


class AuthContext:
    """The identity methods of a grpc.aio ServicerContext, answering as gRPC does.

    gRPC names an authenticated TLS peer by its subject alternative names when it has any,
    else by its CN; a peer that did not authenticate has no peer identities.
    """

    def __init__(self, **properties: list[bytes]) -> None:
        self._properties = properties

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._properties

    def peer_identity_key(self) -> str | None:
        if self._properties.get("transport_security_type") != [b"ssl"]:
            return None
        if "x509_subject_alternative_name" in self._properties:
            return "x509_subject_alternative_name"
        return "x509_common_name" if "x509_common_name" in self._properties else None

    def peer_identities(self) -> list[bytes] | None:
        key = self.peer_identity_key()
        return self._properties[key] if key else None


def tls(**properties: list[bytes]) -> AuthContext:
    sans = [*properties.get("peer_dns", []), *properties.get("peer_uri", [])]
    if sans:
        properties["x509_subject_alternative_name"] = sans
    return AuthContext(transport_security_type=[b"ssl"], **properties)


class TestPeerIdentityName:
    def test_spiffe_id_wins_over_cn(self) -> None:
        """A certificate with a SPIFFE ID is known by it, not by its CN."""
        context = tls(peer_uri=[b"spiffe://td/node/a"], x509_common_name=[b"node-a"])
        assert peer_identity_name(context, False) == "spiffe://td/node/a"

    def test_spiffe_id_among_other_sans(self) -> None:
        """DNS SANs beside the one SPIFFE ID do not change the name."""
        context = tls(peer_dns=[b"node-a.example"], peer_uri=[b"spiffe://td/node/a"])
        assert peer_identity_name(context, False) == "spiffe://td/node/a"

    def test_cn_without_spiffe(self) -> None:
        """Without a spiffe:// URI the name is CN=<cn> (other URIs are ignored)."""
        context = tls(peer_uri=[b"https://example.com"], x509_common_name=[b"ops"])
        assert peer_identity_name(context, False) == "CN=ops"

    def test_several_spiffe_ids_are_refused(self) -> None:
        """A certificate with two SPIFFE IDs is not a valid SVID: unauthenticated."""
        context = tls(peer_uri=[b"spiffe://td/admin", b"spiffe://td/node/a"])
        with pytest.raises(Unauthenticated, match="several SPIFFE IDs"):
            peer_identity_name(context, False)

    @pytest.mark.parametrize("san_type", ["peer_dns", "peer_email"])
    def test_other_san_types_never_name_a_spiffe_id(self, san_type: str) -> None:
        """A DNS or e-mail SAN spelled spiffe://…/admin is no SPIFFE ID: the name is the CN."""
        context = tls(x509_common_name=[b"node-x"], **{san_type: [b"spiffe://td/admin"]})
        context._properties["x509_subject_alternative_name"] = [b"spiffe://td/admin"]
        assert peer_identity_name(context, False) == "CN=node-x"

    def test_spiffe_scheme_and_trust_domain_are_case_insensitive(self) -> None:
        """SPIFFE://TD/x is spiffe://td/x, and counts toward the one-ID rule."""
        upper = tls(peer_uri=[b"SPIFFE://TD.Example/node/a"], x509_common_name=[b"n"])
        assert peer_identity_name(upper, False) == "spiffe://td.example/node/a"
        two = tls(peer_uri=[b"spiffe://td/admin", b"Spiffe://td/node/a"])
        with pytest.raises(Unauthenticated, match="several SPIFFE IDs"):
            peer_identity_name(two, False)

    def test_plaintext_is_refused_unless_dev_port(self) -> None:
        """A plaintext peer is refused, or is insecure-dev when the dev port is on."""
        plaintext = AuthContext(transport_security_type=[b"insecure"])
        with pytest.raises(Unauthenticated, match="mutual TLS"):
            peer_identity_name(plaintext, False)
        assert peer_identity_name(plaintext, True) == INSECURE_IDENTITY

    def test_no_name_at_all_is_refused(self) -> None:
        """A certificate with neither SPIFFE ID nor CN is unauthenticated."""
        with pytest.raises(Unauthenticated):
            peer_identity_name(tls(), False)
