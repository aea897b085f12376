"""The tests' one CA: a throwaway PKI (one per session), EC P-256 leaf certificates on demand.

`TestCA.create` makes a new CA; `TestCA.adopt` wraps one made elsewhere (the broker's own
dev CA in its home) so tests issue crafted certificates from it the same way.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdated so a freshly issued certificate is valid even with a little clock skew.
_BACKDATE = dt.timedelta(minutes=5)
_LIFETIME = dt.timedelta(days=2)


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its private key, both as PEM files."""

    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> str:
        """The certificate in PEM form."""
        return self.cert_path.read_text()

    @property
    def key_pem(self) -> str:
        """The private key in PEM (PKCS#8) form."""
        return self.key_path.read_text()


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a PKCS#8 PEM key readable by its owner only, never briefly world-readable."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """A self-signed CA in a directory (`ca.crt`, `ca.key`) that issues leaf certificates."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = directory
        self.cert = cert
        self.key = key
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"

    @classmethod
    def create(cls, directory: Path, name: str = "pullbroker test CA") -> TestCA:
        """Make a new CA and write `ca.crt` / `ca.key` (0600) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, cert, key)
        ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private_key(ca.key_path, key)
        return ca

    @classmethod
    def adopt(cls, directory: Path, cert_path: Path, key_path: Path) -> TestCA:
        """Issue from an existing CA's files (leaves are written into `directory`)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path}: not an EC private key")
        ca = cls(directory, cert, key)
        ca.cert_path, ca.key_path = cert_path, key_path
        return ca

    @property
    def pem(self) -> str:
        """The CA certificate in PEM form (what a client trusts)."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        name: str,
        *,
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        uris: Iterable[str] = (),
        sans: Iterable[x509.GeneralName] = (),
        cn: str | None = None,
        client: bool = True,
        server: bool = True,
    ) -> IssuedCert:
        """Issue a leaf certificate written as `<name>.crt` / `<name>.key` beside the CA.

        `sans` adds names exactly as given (crafted or malformed ones, for identity tests).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        extra = [*sans, *(x509.UniformResourceIdentifier(u) for u in uris)]
        cert = self._build_leaf(key, dns, ips, extra, cn or name, client=client, server=server)
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private_key(key_path, key)
        return IssuedCert(cert_path, key_path)

    def _build_leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        dns: Iterable[str],
        ips: Iterable[str],
        extra: list[x509.GeneralName],
        cn: str,
        *,
        client: bool,
        server: bool,
    ) -> x509.Certificate:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += extra
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        usages += [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return builder.sign(self.key, hashes.SHA256())
