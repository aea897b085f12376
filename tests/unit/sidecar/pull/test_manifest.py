"""Manifest media types, schema1 refusal, descriptor checks."""

from __future__ import annotations

import json

import pytest
from pullbroker_client.registry.mediatypes import OCI_INDEX, OCI_MANIFEST
from pullbroker_sidecar.errors import UnsupportedManifest
from pullbroker_sidecar.pull.manifest import (
    DOCKER_SCHEMA1_SIGNED,
    effective_media_type,
    parse_image_manifest,
    parse_index,
)

HEX = "c" * 64
LAYER = {"mediaType": "x", "digest": f"sha256:{HEX}", "size": 3}


class TestMediaType:
    def test_schema1_is_refused_with_advice(self) -> None:
        """A schema1 manifest fails with a message saying to push it again."""
        body = json.dumps({"schemaVersion": 1, "fsLayers": []}).encode()
        with pytest.raises(UnsupportedManifest, match=r"schema1.*push it again"):
            effective_media_type(DOCKER_SCHEMA1_SIGNED, body, "r/team/app:v1")

    def test_falls_back_to_the_body(self) -> None:
        """Without a Content-Type the manifest's own mediaType decides."""
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        assert effective_media_type("", body.encode(), "i") == OCI_INDEX

    def test_content_type_parameters_are_ignored(self) -> None:
        """`type; charset=utf-8` is the type."""
        body = json.dumps({"schemaVersion": 2, "layers": []}).encode()
        assert effective_media_type(f"{OCI_MANIFEST}; charset=utf-8", body, "i") == OCI_MANIFEST

    def test_non_image_is_refused(self) -> None:
        """An artifact or unknown type is not pulled as an image."""
        with pytest.raises(UnsupportedManifest, match="not an image"):
            effective_media_type("application/vnd.example+json", b"{}", "i")


class TestParse:
    def test_image_manifest_dedupes_blobs(self) -> None:
        """A layer listed twice is fetched once; config comes first."""
        body = {"config": {**LAYER, "digest": "sha256:" + "d" * 64}, "layers": [LAYER, LAYER]}
        manifest = parse_image_manifest(json.dumps(body).encode(), "i")
        assert len(manifest.layers) == 2
        assert [b.digest for b in manifest.blobs] == ["sha256:" + "d" * 64, f"sha256:{HEX}"]

    @pytest.mark.parametrize(
        "bad",
        [
            {**LAYER, "digest": "sha256:../../x"},
            {**LAYER, "digest": "md5:abc"},
            {**LAYER, "size": -1},
            {**LAYER, "size": "3"},
        ],
    )
    def test_bad_descriptors_are_refused(self, bad: dict[str, object]) -> None:
        """Digests outside the grammar and sizes that are not counts are refused."""
        body = {"config": LAYER, "layers": [bad]}
        with pytest.raises(UnsupportedManifest, match="layer 0"):
            parse_image_manifest(json.dumps(body).encode(), "i")

    def test_index_entries_carry_platforms(self) -> None:
        """Index entries keep their platform objects."""
        entry = {**LAYER, "platform": {"os": "linux", "architecture": "arm64"}}
        (parsed,) = parse_index(json.dumps({"manifests": [entry]}).encode(), "i")
        assert str(parsed.platform) == "linux/arm64"
