"""Failures become OCI error answers with the right status, code and Retry-After."""

from __future__ import annotations

import json

import grpc
import pytest
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.registry.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestUnknown,
    RateLimited,
    RegistryProtocolError,
    RegistryUnreachable,
)
from pullbroker_sidecar.mirror.answers import RETRY_AFTER, error_body, refusal_for


class TestBroker:
    """The broker's refusals keep its reason; its absence says when to retry."""

    def test_permission_denied_is_403_with_the_reason(self) -> None:
        """PERMISSION_DENIED -> 403 DENIED carrying the broker's message."""
        refusal = refusal_for(BrokerCallError(grpc.StatusCode.PERMISSION_DENIED, "rule x denies"))
        assert refusal is not None
        assert (refusal.status, refusal.code, refusal.retry_after) == (403, "DENIED", None)
        assert "rule x denies" in refusal.message

    @pytest.mark.parametrize(
        ("code", "status"),
        [(grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)],
    )
    def test_temporary_carries_retry_after(self, code: grpc.StatusCode, status: int) -> None:
        """UNAVAILABLE -> 503, RESOURCE_EXHAUSTED -> 429, both with Retry-After."""
        refusal = refusal_for(BrokerCallError(code, "busy", retry_after=12.4))
        assert refusal is not None
        assert (refusal.status, refusal.retry_after) == (status, 12)


class TestRegistry:
    """Registry errors map by the most specific class."""

    @pytest.mark.parametrize(
        ("exc", "status", "code"),
        [
            (ManifestUnknown("m"), 404, "MANIFEST_UNKNOWN"),
            (BlobUnknown("b"), 404, "BLOB_UNKNOWN"),
            (RegistryUnreachable("down"), 503, "UNAVAILABLE"),
            (RateLimited("slow"), 429, "TOOMANYREQUESTS"),
            (RegistryProtocolError("5xx", temporary=True), 503, "UNAVAILABLE"),
            (RegistryProtocolError("odd"), 502, "UNKNOWN"),
            # A manifest that does not hash to its digest (the client's error, not the
            # sidecar's blob one): DIGEST_INVALID, not UNKNOWN.
            (DigestMismatch("m", expected="sha256:a", actual="sha256:b"), 502, "DIGEST_INVALID"),
        ],
    )
    def test_mapping(self, exc: Exception, status: int, code: str) -> None:
        """Status and OCI code per class; temporary ones get the default Retry-After."""
        refusal = refusal_for(exc)
        assert refusal is not None
        assert (refusal.status, refusal.code) == (status, code)
        assert refusal.retry_after == (RETRY_AFTER if status in (429, 503) else None)

    def test_bug_is_not_mapped(self) -> None:
        """An unexpected exception is left to the caller (logged, 500)."""
        assert refusal_for(KeyError("x")) is None

    def test_body(self) -> None:
        """The body is the distribution spec's errors document."""
        refusal = refusal_for(BlobUnknown("gone"))
        assert refusal is not None
        assert json.loads(error_body(refusal)) == {
            "errors": [{"code": "BLOB_UNKNOWN", "message": "gone", "detail": None}]
        }
