"""The pull engine: broker token -> manifest (via the index, for one platform) -> blobs -> dest.

Manifests and blobs go through one threaded fetcher (no second HTTP stack on the node);
manifests are verified against their digests, and a 401 asks the authorizer for a fresh
token once. Blobs go into the node store (or straight into an `oci:` layout). Destinations
only ever receive verified content, and only after every blob is stored, so a failed
pull never leaves a tag (or a loaded image) pointing at missing blobs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullbroker_client.registry.errors import AuthenticationRequired
from pullbroker_client.registry.mediatypes import INDEX_TYPES
from pullbroker_client.registry.reference import Reference, parse_reference
from pullbroker_client.registry.tls import ssl_context

from pullbroker_sidecar.errors import (
    GrantMismatch,
    PlatformNotFound,
    PullError,
    UnsupportedManifest,
)
from pullbroker_sidecar.pull.destinations import BlobSource, Destination, FetchedImage
from pullbroker_sidecar.pull.download import DEFAULT_CONCURRENCY, BlobJob, download_blobs
from pullbroker_sidecar.pull.fetch import BlobFetcher, FetchedManifest
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import (
    ACCEPT,
    Descriptor,
    ImageManifest,
    effective_media_type,
    parse_image_manifest,
    parse_index,
)
from pullbroker_sidecar.pull.platform import Platform, choose, host_platform
from pullbroker_sidecar.pull.progress import NullProgress, Progress
from pullbroker_sidecar.pull.store import ContentStore
from pullbroker_sidecar.tokens import BrokerAuthorizer, PullTokenIssuer

_MAX_CONFIG = 4 * 1024 * 1024


@dataclass(frozen=True)
class PullResult:
    """What a pull stored.

    `digest` is the image manifest now under the tag (for an index, the chosen platform's);
    `bytes` is the image's content (config + layers), whether fetched now or already
    present, and `fetched` how many blobs this pull downloaded. `dest` names the
    destination (`oci:DIR`, `docker-daemon`, ...) and `name` what it calls the image now.
    """

    image: str
    digest: str
    platform: Platform | None
    dest: str
    layers: int
    bytes: int
    fetched: int
    image_id: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        """The `--output json` document."""
        return {
            "image": self.image,
            "digest": self.digest,
            "platform": str(self.platform) if self.platform else None,
            "dest": self.dest,
            "layers": self.layers,
            "bytes": self.bytes,
            "fetched": self.fetched,
            "image_id": self.image_id,
            "name": self.name,
        }


@dataclass(frozen=True)
class _Resolved:
    descriptor: Descriptor
    data: bytes
    manifest: ImageManifest


class PullEngine:
    """Pulls images with tokens from the broker into a destination, through the node store.

    With a `store` (its folder; opened once the broker granted the pull), every blob is
    downloaded into it (shared by all pulls on the node, resumable) and the destination is
    filled from there; without one, only an `oci:` destination can be used and blobs are
    downloaded straight into its layout.
    """

    def __init__(
        self,
        broker: PullTokenIssuer,
        *,
        registry: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Progress | None = None,
        timeout: float = 30.0,
        store: Path | None = None,
    ) -> None:
        self._broker = broker
        self._registry = registry
        self._concurrency = concurrency
        self._progress = progress or NullProgress()
        self._timeout = timeout
        self._store = store

    async def pull(
        self, image: str, destination: Destination, *, platform: Platform | None = None
    ) -> PullResult:
        """Pull `image` into `destination` (for `oci:`, tagged with the reference's tag)."""
        ref = parse_reference(image)
        authorizer = BrokerAuthorizer(self._broker, str(ref), registry=self._registry)
        grant = await authorizer.grant()
        if grant.repository and grant.repository != ref.repository:
            raise GrantMismatch(
                f"the broker granted repository {grant.repository!r} for {ref}, not "
                f"{ref.repository!r}: refusing to pull (check the broker's registry record)"
            )
        layout = destination.prepare()  # after the broker said yes: a denied pull writes nothing
        target: ContentStore | OciLayout | None = layout
        if self._store is not None:
            target = ContentStore.open(self._store)
        if target is None:
            raise PullError(f"{destination.label} needs the node store: do not pass --no-store")
        repository = ref.repository
        ca_pem = grant.registry_ca_pem or None
        url = grant.registry_url or f"https://{ref.registry_host}"
        fetcher = BlobFetcher(url, ssl_context(ca_pem), timeout=self._timeout)
        try:
            resolved = await self._resolve(
                _Manifests(fetcher, authorizer, repository), ref, platform
            )
            job = BlobJob(fetcher, authorizer, target, repository, self._progress)
            blobs = resolved.manifest.blobs
            fetched = await download_blobs(job, blobs, concurrency=self._concurrency)
        finally:
            fetcher.close()
        target.put_blob(resolved.descriptor, resolved.data)
        image_ = FetchedImage(ref, resolved.descriptor, resolved.data, resolved.manifest)
        name = await asyncio.to_thread(destination.export, image_, target)
        return PullResult(
            image=str(ref),
            digest=resolved.descriptor.digest,
            platform=resolved.descriptor.platform or _config_platform(target, resolved),
            dest=destination.label,
            layers=len(resolved.manifest.layers),
            bytes=sum(d.size for d in blobs),
            fetched=fetched,
            image_id=resolved.manifest.config.digest,
            name=name,
        )

    async def _resolve(
        self, manifests: _Manifests, ref: Reference, wanted: Platform | None
    ) -> _Resolved:
        image = str(ref)
        found = await manifests.get(ref.identifier)
        media_type = effective_media_type(found.media_type, found.data, image)
        chosen: Platform | None = None
        if media_type in INDEX_TYPES:
            entry = _pick(parse_index(found.data, image), wanted or host_platform(), image)
            self._progress.note(f"{image}: {entry.platform} is {entry.digest}")
            found = await manifests.get(entry.digest)
            media_type = effective_media_type(found.media_type, found.data, image)
            if media_type in INDEX_TYPES:
                raise UnsupportedManifest(
                    f"{image}: the {entry.platform} entry is itself an index; "
                    "nested indexes are not pulled"
                )
            chosen = entry.platform
        descriptor = Descriptor(media_type, found.digest, len(found.data), platform=chosen)
        return _Resolved(descriptor, found.data, parse_image_manifest(found.data, image))


@dataclass(frozen=True)
class _Manifests:
    """Manifests through the blob fetcher (no second HTTP stack on the node): a 401 asks the
    broker for a fresh token once, as blob downloads do."""

    fetcher: BlobFetcher
    authorizer: BrokerAuthorizer
    repository: str

    async def get(self, reference: str) -> FetchedManifest:
        for refresh in (False, True):
            authorization = await self.authorizer.authorization(refresh=refresh)
            try:
                return await asyncio.to_thread(
                    self.fetcher.fetch_manifest, self.repository, reference, ACCEPT, authorization
                )
            except AuthenticationRequired:
                if refresh:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")


def _pick(entries: list[Descriptor], wanted: Platform, image: str) -> Descriptor:
    index = choose(wanted, [e.platform for e in entries])
    if index is None:
        offered = sorted({str(e.platform) for e in entries if e.platform is not None})
        raise PlatformNotFound(
            f"{image} has no manifest for {wanted}; it offers: {', '.join(offered) or 'none'} "
            "(choose one with --platform OS/ARCH)"
        )
    return entries[index]


def _config_platform(source: BlobSource, resolved: _Resolved) -> Platform | None:
    """The platform an image's config declares (for images pulled without an index)."""
    config = resolved.manifest.config
    if config.size > _MAX_CONFIG:
        return None
    try:
        document = json.loads(source.blob_path(config.digest).read_bytes())
    except (OSError, ValueError):
        return None
    return Platform.from_json(document) if isinstance(document, dict) else None
