"""OCI image layouts built in pure Python (no daemon): configs, gzip tar layers, manifests, indexes.

Layer content is random (incompressible) by default; pass `seed` for byte-identical rebuilds.
Pushing with skopeo lives in `tests.harness.skopeo` and is re-exported here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.skopeo import inspect_raw, pull_to_layout, push, push_image

__all__ = [
    "BuiltImage",
    "BuiltManifest",
    "Layer",
    "build_image",
    "inspect_raw",
    "pull_to_layout",
    "push",
    "push_image",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 4 << 20
_FIXED_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Layer:
    """One gzip tar layer: `digest`/`size` of the compressed blob, `diff_id` of the tar."""

    digest: str
    size: int
    diff_id: str
    content_size: int


@dataclass(frozen=True)
class BuiltManifest:
    """One platform's image manifest."""

    digest: str
    size: int
    platform: tuple[str, str] | None
    config_digest: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class BuiltImage:
    """An image written to an OCI layout under `tag`."""

    layout_dir: Path
    tag: str
    digest: str  # what the tag points at: the index if multi-platform, else the manifest
    media_type: str
    manifests: tuple[BuiltManifest, ...]
    index_digest: str | None = None

    @property
    def manifest_digest(self) -> str:
        """The (first) platform manifest's digest."""
        return self.manifests[0].digest

    @property
    def layer_digests(self) -> list[str]:
        """Every layer digest over all platforms, in order."""
        return [layer.digest for m in self.manifests for layer in m.layers]

    @property
    def layers(self) -> list[Layer]:
        """Every layer over all platforms, in order."""
        return [layer for m in self.manifests for layer in m.layers]

    @property
    def blob_bytes(self) -> int:
        """Total compressed layer bytes a full pull downloads."""
        return sum(layer.size for layer in self.layers)

    def layout_ref(self) -> str:
        """`oci:DIR:TAG` for skopeo."""
        return f"oci:{self.layout_dir}:{self.tag}"


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.count += len(view)
        if self.target is not None:
            self.target.write(view)
        return len(view)


def _write_tar(out: _HashingWriter, name: str, size: int, source: Callable[[int], bytes]) -> None:
    # A one-file tar written by hand: tarfile would copy the content through 16 KiB reads.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, _FIXED_MTIME, 0o644
    out.write(info.tobuf(tarfile.PAX_FORMAT))
    remaining = size
    while remaining:
        chunk = source(min(_CHUNK, remaining))
        out.write(chunk)
        remaining -= len(chunk)
    out.write(b"\0" * ((-size) % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE))


def _content_source(seed: int | None, random_content: bool) -> Callable[[int], bytes]:
    if not random_content:
        pattern = b"pullbroker-test-layer-" * 4096
        return lambda n: (pattern * (n // len(pattern) + 1))[:n]
    if seed is None:
        return os.urandom
    return random.Random(seed).randbytes


class LayoutWriter:
    """Writes blobs and the top-level index.json of one OCI layout directory."""

    def __init__(self, layout_dir: Path) -> None:
        self.dir = layout_dir
        self.blobs = layout_dir / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (layout_dir / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put_json(self, obj: dict[str, Any]) -> tuple[str, int, bytes]:
        """Store a JSON blob; returns (digest, size, bytes)."""
        data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.blobs / digest[7:]).write_bytes(data)
        return digest, len(data), data

    def put_layer(
        self, content_size: int, source: Callable[[int], bytes], name: str, compresslevel: int
    ) -> Layer:
        """Write a gzip tar holding one file of `content_size` bytes."""
        tmp = self.blobs / f".tmp-{os.getpid()}-{name}"
        with tmp.open("wb") as fh:
            outer = _HashingWriter(fh)
            with gzip.GzipFile(
                fileobj=outer, mode="wb", compresslevel=compresslevel, mtime=0
            ) as gz:
                inner = _HashingWriter(gz)
                _write_tar(inner, f"data/{name}.bin", content_size, source)
        digest = "sha256:" + outer.hash.hexdigest()
        tmp.replace(self.blobs / digest[7:])
        return Layer(digest, outer.count, "sha256:" + inner.hash.hexdigest(), content_size)

    def tag(self, tag: str, media_type: str, digest: str, size: int) -> None:
        """Point `tag` at a manifest or index in index.json (replacing an older entry)."""
        path = self.dir / "index.json"
        index: dict[str, Any] = (
            json.loads(path.read_text())
            if path.exists()
            else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        )
        index["manifests"] = [
            m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag
        ]
        index["manifests"].append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": {REF_NAME: tag},
            }
        )
        path.write_text(json.dumps(index, indent=1))


def _build_manifest(
    writer: LayoutWriter,
    platform: tuple[str, str],
    layer_sizes: Sequence[int],
    source: Callable[[int], bytes],
    compresslevel: int,
    label: str,
) -> BuiltManifest:
    layers = [
        writer.put_layer(size, source, f"{label}-{platform[1]}-{i}", compresslevel)
        for i, size in enumerate(layer_sizes)
    ]
    config = {
        "architecture": platform[1],
        "os": platform[0],
        "created": "2024-01-01T00:00:00Z",
        "config": {"Labels": {"pullbroker.test": label}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    config_digest, config_size, _ = writer.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    digest, size, _ = writer.put_json(manifest)
    return BuiltManifest(digest, size, platform, config_digest, tuple(layers))


def build_image(
    layout_dir: Path,
    tag: str,
    layer_sizes: Sequence[int] = (1024,),
    platforms: Sequence[tuple[str, str]] | None = None,
    *,
    seed: int | None = None,
    random_content: bool = True,
    compresslevel: int | None = None,
) -> BuiltImage:
    """Write an image (or an index over `platforms`) into the OCI layout `layout_dir` as `tag`.

    Several tags may share one layout. `seed` makes the bytes reproducible; without it every
    build differs. Layers of different platforms differ too. `compresslevel` defaults to 0
    (stored deflate blocks, still valid gzip) for random content, which deflate cannot shrink
    and level 1 would spend ~20 ms/MiB on, and to 1 otherwise.
    """
    if compresslevel is None:
        compresslevel = 0 if random_content else 1
    writer = LayoutWriter(layout_dir)
    source = _content_source(seed, random_content)
    label = f"{tag}-{seed if seed is not None else os.urandom(4).hex()}"
    if platforms is None:
        built = _build_manifest(
            writer, ("linux", "amd64"), layer_sizes, source, compresslevel, label
        )
        writer.tag(tag, OCI_MANIFEST, built.digest, built.size)
        single = BuiltManifest(built.digest, built.size, None, built.config_digest, built.layers)
        return BuiltImage(layout_dir, tag, built.digest, OCI_MANIFEST, (single,))
    manifests = tuple(
        _build_manifest(writer, p, layer_sizes, source, compresslevel, label) for p in platforms
    )
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": m.digest,
                "size": m.size,
                "platform": {"os": m.platform[0], "architecture": m.platform[1]},
            }
            for m in manifests
            if m.platform is not None
        ],
    }
    index_digest, index_size, _ = writer.put_json(index)
    writer.tag(tag, OCI_INDEX, index_digest, index_size)
    return BuiltImage(layout_dir, tag, index_digest, OCI_INDEX, manifests, index_digest)
