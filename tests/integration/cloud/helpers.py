"""What the cloud minter tests share: pulling a manifest with a minted token, reading claims."""

from __future__ import annotations

import ssl

import httpx
from pullbroker_service.domain.model import MintedToken

from tests.harness.images import OCI_INDEX, OCI_MANIFEST
from tests.harness.jwt_signer import decode_claims

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])


def get_manifest(base_url: str, ca_pem: str, token: MintedToken, repository: str) -> httpx.Response:
    """GET /v2/<repository>/manifests/v1 from the real registry with the minted Bearer token."""
    context = ssl.create_default_context(cadata=ca_pem)
    with httpx.Client(verify=context, trust_env=False, timeout=10) as http:
        return http.get(
            f"{base_url}/v2/{repository}/manifests/v1",
            headers={"Accept": ACCEPT, "Authorization": f"Bearer {token.token.reveal()}"},
        )


def granted(token: MintedToken) -> list[tuple[str, tuple[str, ...]]]:
    """(repository, actions) the registry token grants, read from its access claim."""
    claims = decode_claims(token.token.reveal())
    return [(a["name"], tuple(a["actions"])) for a in claims.get("access", [])]
