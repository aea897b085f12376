"""The Content-Type the mirror answers for a stored manifest never comes unchecked from the
document: a pusher's mediaType with a line break falls back to what the shape says."""

from __future__ import annotations

import json

from pullbroker_sidecar.mirror.manifests import media_type_of
from pullbroker_sidecar.mirror.wire import head_bytes

INJECTED = "application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: sha256:" + "0" * 64


class TestStoredManifestMediaType:
    def test_injected_media_type_falls_back_to_the_shape(self) -> None:
        image = json.dumps({"schemaVersion": 2, "mediaType": INJECTED, "layers": []}).encode()
        index = json.dumps({"schemaVersion": 2, "mediaType": INJECTED, "manifests": []}).encode()
        assert media_type_of(image) == "application/vnd.oci.image.manifest.v1+json"
        assert media_type_of(index) == "application/vnd.oci.image.index.v1+json"

    def test_the_answer_head_has_one_digest_header(self) -> None:
        data = json.dumps({"schemaVersion": 2, "mediaType": INJECTED, "layers": []}).encode()
        head = head_bytes(200, {"Content-Type": media_type_of(data),
                                "Docker-Content-Digest": "sha256:" + "1" * 64})  # fmt: skip
        assert head.count(b"Docker-Content-Digest") == 1
