"""Images a registry would not accept on push, written straight into its storage.

A hostile or broken registry can serve anything; the real registry validates pushes, so a
test that needs a manifest declaring a 1 TiB layer, or a config nested 100k deep, writes
the registry's filesystem-driver layout itself and lets the real registry serve it:

    blobs/sha256/<2>/<hex>/data                           content
    repositories/<repo>/_layers/sha256/<hex>/link         a blob linked into the repository
    repositories/<repo>/_manifests/revisions/sha256/<hex>/link
    repositories/<repo>/_manifests/tags/<tag>/{current,index/sha256/<hex>}/link
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pullbroker_client.registry.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

from tests.harness.registry import Registry

_V2 = "docker/registry/v2"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def _put_blob(registry: Registry, repository: str, data: bytes, *, layer: bool) -> str:
    digest = _digest(data)
    target = registry.blob_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if layer:
        repo = registry.storage_dir / _V2 / "repositories" / repository
        _link(repo / "_layers" / "sha256" / digest[7:], digest)
    return digest


def plant_image(
    registry: Registry,
    repository: str,
    tag: str,
    config: bytes,
    layers: list[tuple[bytes | None, int]],
) -> str:
    """Serve an OCI image whose config is `config` and whose layers are (bytes, declared size).

    A layer given as `(None, size)` is declared only: no bytes exist for it. Returns the
    manifest digest.
    """
    descriptors: list[dict[str, Any]] = []
    for i, (data, size) in enumerate(layers):
        digest = _put_blob(registry, repository, data, layer=True) if data else _fake(i)
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size})
    config_digest = _put_blob(registry, repository, config, layer=True)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors,
        }
    ).encode()
    digest = _put_blob(registry, repository, manifest, layer=False)
    manifests = registry.storage_dir / _V2 / "repositories" / repository / "_manifests"
    _link(manifests / "revisions" / "sha256" / digest[7:], digest)
    _link(manifests / "tags" / tag / "current", digest)
    _link(manifests / "tags" / tag / "index" / "sha256" / digest[7:], digest)
    return digest


def _fake(i: int) -> str:
    return _digest(f"declared-only layer {i}".encode())
