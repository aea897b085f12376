"""A manifest's media type is repeated as a Content-Type: only a well-formed one passes."""

from __future__ import annotations

import json

import pytest
from pullbroker_client.registry.verify import manifest_media_type

OCI = "application/vnd.oci.image.manifest.v1+json"


def manifest(media_type: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "layers": []}).encode()


class TestMediaType:
    def test_declared_header_wins(self) -> None:
        assert manifest_media_type(f"{OCI}; charset=utf-8", manifest("x/y")) == OCI

    def test_generic_header_defers_to_the_document(self) -> None:
        assert manifest_media_type("application/json", manifest(OCI)) == OCI

    @pytest.mark.parametrize(
        "hostile",
        [
            f"{OCI}\r\nDocker-Content-Digest: sha256:{'0' * 64}",
            f"{OCI}\nX: y",
            "application/vnd oci",
            "application/\u00e9t\u00e9",
            "noslash",
            "",
        ],
    )
    def test_a_document_cannot_choose_a_header(self, hostile: str) -> None:
        """A pusher's mediaType with a line break, space, non-ASCII or no subtype is not a
        media type: the registry's generic header (or nothing) is answered instead."""
        assert manifest_media_type("application/json", manifest(hostile)) == "application/json"
        assert manifest_media_type(None, manifest(hostile)) == ""

    def test_a_header_cannot_either(self) -> None:
        assert manifest_media_type("a b/c", manifest(OCI)) == OCI
