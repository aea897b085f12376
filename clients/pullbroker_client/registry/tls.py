"""Explicit TLS trust for registry connections, shared by every HTTP client of a registry.

Kept apart from transport.py (httpx) so that callers with their own HTTP stack (the
sidecar's blob fetcher) trust exactly the same CAs without importing httpx.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pullbroker_client.registry.errors import RegistryTLSError

__all__ = ["ssl_context"]


def ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """A client context trusting only `ca_pem`, or the system store when it is None or empty.

    The system store is OpenSSL's compiled-in location, read explicitly, because the default
    loader also honours SSL_CERT_FILE/SSL_CERT_DIR, which this machine sets globally.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise RegistryTLSError(
                "the registry CA is not a valid PEM certificate bundle: check registry_ca_pem"
            ) from exc
        return context
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if Path(paths.openssl_cafile).is_file() else None
    capath = paths.openssl_capath if Path(paths.openssl_capath).is_dir() else None
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    return context
