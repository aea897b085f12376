"""A token's claims are read through the bounded JSON reader: a hostile payload means
"cannot tell", never a RecursionError."""

from __future__ import annotations

import base64

from pullbroker_service.minting.token_claims import grants_pull


class TestTokenClaims:
    def test_a_deeply_nested_payload_cannot_tell(self) -> None:
        payload = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
        assert grants_pull(f"e30.{payload}.sig", "team/app") is None
