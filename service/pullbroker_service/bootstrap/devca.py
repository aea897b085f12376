"""The development CA: certificates and a default policy for a fresh home folder.

The first `pullbroker serve` in a home folder creates `tls/ca.crt|key` and server, admin and
node certificates signed by it, and the development `policy.yaml` (admin -> admin; every
node -> node, pulling anything). It never overwrites: files that exist are
kept, and only missing ones are made (a missing leaf is re-issued from the existing CA).
Keys are written 0600 with O_EXCL, so a concurrent second run cannot clobber the first.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pullbroker_client.home import Home

from pullbroker_service.app.policy_source import write_default_policy
from pullbroker_service.domain.errors import StartupError

TRUST_DOMAIN = "pullbroker.local"
BROKER_SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/broker"
ADMIN_SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/admin"
NODE_SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/node/"
_CA_DAYS = 3650
_LEAF_DAYS = 825


class DevCAError(StartupError):
    """The home folder's CA cannot be used (e.g. ca.crt exists without ca.key)."""


@dataclass(frozen=True)
class LeafSpec:
    """What goes into one leaf certificate."""

    common_name: str
    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, able to sign leaves."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, common_name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DevCAError(
                f"{key_path} is not an EC key: move the tls folder aside to regenerate"
            )
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def issue(self, spec: LeafSpec) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for `spec`, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
        sans += [x509.DNSName(d) for d in spec.dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ip_addresses]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if spec.server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if spec.client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def node_name(hostname: str | None = None) -> str:
    """The host name as a SPIFFE path segment (lowercase; other characters become '-')."""
    raw = (hostname or socket.gethostname()).lower()
    return re.sub(r"[^a-z0-9._-]", "-", raw).strip("-.") or "node"


def leaf_specs(hostname: str | None = None) -> dict[str, LeafSpec]:
    """The three leaves a home folder holds: server, admin and node."""
    node = node_name(hostname)
    return {
        "server": LeafSpec(
            "pullbroker-broker",
            uris=(BROKER_SPIFFE_ID,),
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
            server=True,
        ),
        "admin": LeafSpec("admin", uris=(ADMIN_SPIFFE_ID,), client=True),
        "node": LeafSpec(f"node-{node}", uris=(NODE_SPIFFE_PREFIX + node,), client=True),
    }


def ensure_dev_ca(home: Home, hostname: str | None = None) -> list[Path]:
    """Create whatever of the dev CA, leaves and policy is missing; return the files made."""
    made: list[Path] = []
    home.tls_dir.mkdir(parents=True, exist_ok=True)
    ca = _ensure_ca(home, made)
    for name, spec in leaf_specs(hostname).items():
        if home.cert(name).exists() and home.key(name).exists():
            continue
        if home.cert(name).exists() or home.key(name).exists():
            raise DevCAError(
                f"{home.cert(name)} or {home.key(name)} is missing while the other exists: "
                "restore it or remove both to have them re-issued"
            )
        cert_pem, key_pem = ca.issue(spec)
        _write_new(home.key(name), key_pem, 0o600)
        _write_new(home.cert(name), cert_pem, 0o644)
        made += [home.cert(name), home.key(name)]
    if write_default_policy(home.policy_yaml):
        made.append(home.policy_yaml)
    return made


def _ensure_ca(home: Home, made: list[Path]) -> CertificateAuthority:
    have_cert, have_key = home.ca_cert.exists(), home.ca_key.exists()
    if have_cert and have_key:
        return CertificateAuthority.load(home.ca_cert, home.ca_key)
    if have_cert or have_key:
        raise DevCAError(
            f"{home.ca_cert} and {home.ca_key} must both exist: restore the missing one, "
            f"or move {home.tls_dir} aside to create a new development CA"
        )
    ca = CertificateAuthority.generate("pullbroker development CA")
    _write_new(home.ca_key, ca.key_pem(), 0o600)
    _write_new(home.ca_cert, ca.cert_pem(), 0o644)
    made += [home.ca_cert, home.ca_key]
    return ca


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, with `mode` from the start (no umask window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
