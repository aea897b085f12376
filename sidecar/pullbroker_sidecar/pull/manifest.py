"""Descriptors, image manifests and indexes as the pull engine needs them.

Only what a pull relies on is parsed: the manifest bytes are kept as received so the
digest written to the layout is the registry's. Digests are checked against a strict
grammar here because they become file names. Every document (manifest, index, config) goes
through the client's one bounded JSON parser (`registry/document.py`), so only
`UnsupportedManifest` ever leaves this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pullbroker_client.registry.document import load_object
from pullbroker_client.registry.errors import RegistryProtocolError
from pullbroker_client.registry.mediatypes import (
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
)

from pullbroker_sidecar.errors import UnsupportedManifest
from pullbroker_sidecar.pull.platform import Platform

DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# What we ask for; schema1 is left out so a registry that can convert will not send it.
ACCEPT = MANIFEST_ACCEPT

REF_NAME = "org.opencontainers.image.ref.name"

CONFIG_LIMIT = 16 << 20
"""Largest image config parsed (real ones are a few KiB; a 10k-step history is ~2 MiB)."""

_DIGEST = re.compile(r"\A(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z")


def valid_digest(digest: str) -> bool:
    """True for `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase), the only ones we store."""
    return _DIGEST.match(digest) is not None


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, what: str) -> Descriptor:
        """Parse and check one descriptor; `what` names it in errors ("layer 2 of ...")."""
        if not isinstance(data, dict):
            raise UnsupportedManifest(f"{what} is not a descriptor object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(digest, str) or not valid_digest(digest):
            raise UnsupportedManifest(f"{what} has no valid sha256/sha512 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsupportedManifest(f"{what} ({digest}) has no valid size")
        annotations = data.get("annotations")
        return cls(
            media_type=media_type if isinstance(media_type, str) else "",
            digest=digest,
            size=size,
            platform=Platform.from_json(data.get("platform")),
            annotations=dict(annotations) if isinstance(annotations, dict) else {},
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor as an OCI JSON object."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ImageManifest:
    """The blobs one image manifest names: its config and its layers, in order."""

    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers, each digest once (a layer may repeat)."""
        seen: dict[str, Descriptor] = {}
        for d in (self.config, *self.layers):
            seen.setdefault(d.digest, d)
        return tuple(seen.values())


def effective_media_type(declared: str, data: bytes, image: str) -> str:
    """The manifest's media type: the Content-Type, else its own `mediaType` field.

    Schema1 is refused here, with what to do about it.
    """
    body = _load(data, f"the manifest of {image}")
    inner = body.get("mediaType")
    media_type = declared.split(";")[0].strip() or (inner if isinstance(inner, str) else "")
    if media_type in SCHEMA1 or body.get("schemaVersion") == 1:
        raise UnsupportedManifest(
            f"{image} only has a Docker schema1 manifest, which is deprecated and not pulled: "
            "push it again with a current client (schema2 or OCI)"
        )
    if not media_type and isinstance(body.get("manifests"), list):
        media_type = OCI_INDEX
    elif not media_type and isinstance(body.get("layers"), list):
        media_type = OCI_MANIFEST
    if media_type not in IMAGE_MANIFEST_TYPES | INDEX_TYPES:
        raise UnsupportedManifest(
            f"{image} has a manifest of type {media_type or 'unknown'!r}, which is not an image"
        )
    return media_type


def parse_index(data: bytes, image: str) -> list[Descriptor]:
    """The entries of an OCI index or Docker manifest list."""
    entries = _load(data, f"the index of {image}").get("manifests")
    if not isinstance(entries, list):
        raise UnsupportedManifest(f"the index of {image} has no manifests list")
    return [
        Descriptor.from_json(e, f"entry {i} of the index of {image}") for i, e in enumerate(entries)
    ]


def parse_image_manifest(data: bytes, image: str) -> ImageManifest:
    """The config and layer descriptors of an OCI or Docker schema2 image manifest."""
    body = _load(data, f"the manifest of {image}")
    layers = body.get("layers")
    if not isinstance(layers, list):
        raise UnsupportedManifest(f"the manifest of {image} has no layers list")
    return ImageManifest(
        config=Descriptor.from_json(body.get("config"), f"the config of {image}"),
        layers=tuple(
            Descriptor.from_json(layer, f"layer {i} of {image}") for i, layer in enumerate(layers)
        ),
    )


def parse_config(data: bytes, image: str) -> Platform | None:
    """Check an image config is a (bounded) JSON object; the platform it declares."""
    if len(data) > CONFIG_LIMIT:
        raise UnsupportedManifest(
            f"the config of {image} is {len(data)} bytes, more than {CONFIG_LIMIT}: refused"
        )
    return Platform.from_json(_load(data, f"the config of {image}"))


def _load(data: bytes, subject: str) -> dict[str, Any]:
    try:
        return load_object(data, subject)
    except RegistryProtocolError as exc:
        raise UnsupportedManifest(str(exc)) from None
