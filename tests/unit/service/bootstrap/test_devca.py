"""The development CA: what a fresh home folder gets, and that nothing is ever overwritten."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pullbroker_client.home import Home
from pullbroker_service.bootstrap.devca import DevCAError, ensure_dev_ca


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


class TestFreshHome:
    def test_creates_ca_leaves_and_policy(self, tmp_path: Path) -> None:
        """A fresh home gets the CA, three leaves (keys 0600) and the default policy."""
        home = Home(tmp_path)
        made = ensure_dev_ca(home, hostname="Worker-1")
        assert home.policy_yaml in made
        for name in ("ca", "server", "admin", "node"):
            key = home.ca_key if name == "ca" else home.key(name)
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert "spiffe://pullbroker.local/node/*" in home.policy_yaml.read_text()

    def test_leaf_identities(self, tmp_path: Path) -> None:
        """Server, admin and node certificates carry the documented SANs and names."""
        home = Home(tmp_path)
        ensure_dev_ca(home, hostname="Worker-1")
        server = load(home.cert("server"))
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        assert uris(server) == ["spiffe://pullbroker.local/broker"]
        admin = load(home.cert("admin"))
        assert uris(admin) == ["spiffe://pullbroker.local/admin"]
        assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
        node = load(home.cert("node"))
        assert uris(node) == ["spiffe://pullbroker.local/node/worker-1"]
        assert node.issuer == load(home.ca_cert).subject


class TestIdempotent:
    def test_second_run_changes_nothing(self, tmp_path: Path) -> None:
        """Running again makes no file and leaves every byte as it was."""
        home = Home(tmp_path)
        ensure_dev_ca(home)
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert ensure_dev_ca(home) == []
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    def test_edited_policy_is_kept(self, tmp_path: Path) -> None:
        """An existing policy.yaml is never replaced."""
        home = Home(tmp_path)
        home.policy_yaml.write_text("rules: []\n")
        ensure_dev_ca(home)
        assert home.policy_yaml.read_text() == "rules: []\n"

    def test_missing_leaf_is_reissued_from_the_same_ca(self, tmp_path: Path) -> None:
        """A deleted leaf pair is issued again, signed by the existing CA."""
        home = Home(tmp_path)
        ensure_dev_ca(home)
        ca = home.ca_cert.read_bytes()
        home.cert("node").unlink()
        home.key("node").unlink()
        assert ensure_dev_ca(home) == [home.cert("node"), home.key("node")]
        assert home.ca_cert.read_bytes() == ca
        assert load(home.cert("node")).issuer == load(home.ca_cert).subject

    def test_half_a_ca_is_an_error(self, tmp_path: Path) -> None:
        """ca.crt without ca.key is refused rather than silently replaced."""
        home = Home(tmp_path)
        ensure_dev_ca(home)
        home.ca_key.unlink()
        with pytest.raises(DevCAError, match=r"ca\.key"):
            ensure_dev_ca(home)
