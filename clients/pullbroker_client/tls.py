"""mTLS channel credentials from PEM files.

Trust is always explicit: the CA bundle named here, never the environment's
(SSL_CERT_FILE and friends are set machine-wide on some hosts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home


@dataclass(frozen=True)
class TlsFiles:
    """The three PEM files a client needs: the CA that signs the broker, its own cert and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_home(
        cls,
        home: Home,
        role: str,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> TlsFiles:
        """The home folder's `tls/ca.crt` and `tls/<role>.crt|.key`, each overridable."""
        return cls(
            ca=ca or home.ca_cert,
            cert=cert or home.cert(role),
            key=key or home.key(role),
        )

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) PEM bytes; a missing or unreadable file says which flag fixes it."""
        return (
            _read(self.ca, "--ca", "the CA certificate"),
            _read(self.cert, "--cert", "the client certificate"),
            _read(self.key, "--key", "the client key"),
        )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Credentials that present `files.cert` and trust only `files.ca`."""
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def _read(path: Path, flag: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{what} {path} does not exist: run `pullbroker serve --home DIR` once to create "
            f"the development certificates, or pass {flag} FILE"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} {path} ({exc.strerror}): fix its permissions or pass {flag} FILE"
        ) from None
    if b"-----BEGIN" not in data:
        raise ConfigurationError(f"{what} {path} is not a PEM file: pass {flag} FILE")
    return data
