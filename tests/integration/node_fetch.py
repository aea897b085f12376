"""Manifests fetched the way a node fetches them: through the sidecar's BlobFetcher.

Integration tests that check a minted token by using it go through the path nodes run
(manifest redirects, digest checks and error mapping by the registry rules), not a client
of their own.
"""

from __future__ import annotations

import asyncio

from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret
from pullbroker_sidecar.pull.fetch import BlobFetcher
from pullbroker_sidecar.pull.manifest import ACCEPT


async def manifest_digest(
    url: str, ca_pem: str, repository: str, reference: str, authorization: Secret | None
) -> str:
    """The verified digest of repository:reference at the registry `url`, as a node gets it."""
    fetcher = BlobFetcher(url, ssl_context(ca_pem or None), timeout=10)
    try:
        found = await asyncio.to_thread(
            fetcher.fetch_manifest, repository, reference, ACCEPT, authorization
        )
    finally:
        fetcher.close()
    return found.digest
