"""One image as a tar stream that docker, containerd, podman and skopeo all load.

The tar is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) that also
carries Docker's `manifest.json` naming the same blob files, the shape `docker save` has
written since Docker 25. Docker 20.10's `/images/load` reads `manifest.json` (and accepts
gzip layers: it decompresses and checks each against the config's diff_ids), `ctr images
import` reads `index.json` and names the image from `io.containerd.image.name`, and
`skopeo`/`podman` read it as `docker-archive:`. Layers stay as the registry served them.

The tar is written as a stream (`w|`), so it can go straight into a socket or a pipe:
nothing is staged on disk. Entries are deterministic (mtime 0, root-owned, 0644).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from pullbroker_client.registry.mediatypes import OCI_INDEX

from pullbroker_sidecar.pull.manifest import REF_NAME, Descriptor

CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_VERSION = "1.0.0"


@dataclass(frozen=True)
class ArchiveImage:
    """What goes into the archive: the image manifest and what it names.

    `name` is the full reference without digest (`host/repo:tag`), None for an image
    pulled by digest only (it is then loaded untagged). `aliases` are more `host/repo:tag`
    names for Docker's `manifest.json` only (the digest-pinned tags of `docker-daemon`).
    """

    name: str | None
    tag: str | None
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        """`name` and the aliases, each once: what dockerd tags the image."""
        return list(dict.fromkeys([*([self.name] if self.name else []), *self.aliases]))

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config, layers and the manifest, each digest once."""
        seen: dict[str, Descriptor] = {}
        for d in (self.config, *self.layers, self.manifest):
            seen.setdefault(d.digest, d)
        return tuple(seen.values())


def blob_member(digest: str) -> str:
    """The archive path of a blob: `blobs/<alg>/<hex>`."""
    algorithm, hex_ = digest.split(":", 1)
    return f"blobs/{algorithm}/{hex_}"


def write_archive(
    out: IO[bytes], image: ArchiveImage, open_blob: Callable[[str], BinaryIO]
) -> None:
    """Stream the archive of `image` into `out`; blobs are read from `open_blob(digest)`."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}))
        for folder in ("blobs/", "blobs/sha256/"):
            tar.addfile(_info(folder, 0, directory=True))
        for descriptor in image.blobs:
            with open_blob(descriptor.digest) as fh:
                tar.addfile(_info(blob_member(descriptor.digest), descriptor.size), fh)
        _add_bytes(tar, "index.json", json.dumps(_index(image)))
        _add_bytes(tar, "manifest.json", json.dumps(_docker_manifest(image)))


def _index(image: ArchiveImage) -> dict[str, Any]:
    entry = image.manifest.to_json()
    annotations: dict[str, str] = dict(entry.get("annotations", {}))
    if image.name:
        annotations[CONTAINERD_NAME] = image.name
    if image.tag:
        annotations[REF_NAME] = image.tag
    if annotations:
        entry["annotations"] = annotations
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}


def _docker_manifest(image: ArchiveImage) -> list[dict[str, Any]]:
    return [
        {
            "Config": blob_member(image.config.digest),
            "RepoTags": image.names,
            "Layers": [blob_member(d.digest) for d in image.layers],
        }
    ]


def _add_bytes(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _info(name: str, size: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info
