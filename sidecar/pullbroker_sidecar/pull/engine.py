"""The pull engine: broker token -> manifest (via the index, for one platform) -> blobs -> dest.

Manifests and blobs go through one threaded fetcher (no second HTTP stack on the node);
manifests are verified against their digests, and a 401 asks the authorizer for a fresh
token once. Before any blob is requested, the sizes the manifest declares are checked
against the limits (limits.py) and the free space of the store and destination against
what is missing. Blobs go into the node store (or straight into an `oci:` layout). The
config is parsed (bounded, see manifest.py) once it is stored, and only then does the
destination see anything: it receives verified content only, after every blob is stored,
so a failed pull never leaves a tag (or a loaded image) pointing at missing or bad blobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pullbroker_client import tracing
from pullbroker_client.errors import ClientError
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
from pullbroker_sidecar.metrics import SidecarMetrics, pull_outcome
from pullbroker_sidecar.pull.destinations import (
    BlobSource,
    Destination,
    FetchedImage,
    export_space,
)
from pullbroker_sidecar.pull.download import DEFAULT_CONCURRENCY, BlobJob, download_blobs
from pullbroker_sidecar.pull.fetch import BlobFetcher, FetchedManifest
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.limits import PullLimits, check_free_space
from pullbroker_sidecar.pull.manifest import (
    ACCEPT,
    CONFIG_LIMIT,
    Descriptor,
    ImageManifest,
    effective_media_type,
    parse_config,
    parse_image_manifest,
    parse_index,
)
from pullbroker_sidecar.pull.platform import Platform, choose, host_platform
from pullbroker_sidecar.pull.progress import NullProgress, Progress
from pullbroker_sidecar.pull.store import ContentStore
from pullbroker_sidecar.tokens import BrokerAuthorizer, PullTokenIssuer


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


def _span_attributes(image: str, destination: Destination) -> dict[str, tracing.Attribute]:
    """The pull span's attributes: where from and what kind of destination (no path)."""
    attributes: dict[str, tracing.Attribute] = {
        "pullbroker.pull.dest": destination.label.partition(":")[0]
    }
    try:
        ref = parse_reference(image)
    except ClientError:
        return attributes  # the pull itself fails on it, and the span records why
    attributes["pullbroker.registry.host"] = ref.registry_host
    attributes["pullbroker.repository"] = ref.repository
    return attributes


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
        limits: PullLimits | None = None,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._registry = registry
        self._concurrency = concurrency
        self._progress = progress or NullProgress()
        self._timeout = timeout
        self._store = store
        self._limits = limits or PullLimits()

    async def pull(
        self, image: str, destination: Destination, *, platform: Platform | None = None
    ) -> PullResult:
        """Pull `image` into `destination` (for `oci:`, tagged with the reference's tag)."""
        attributes = _span_attributes(image, destination) if tracing.enabled() else None
        with tracing.span("pullbroker.pull", attributes=attributes) as span:
            result = await self._measured(image, destination, platform)
            span.set_attribute("pullbroker.image.digest", result.digest)
            span.set_attribute("pullbroker.pull.blobs_fetched", result.fetched)
            return result

    async def _measured(
        self, image: str, destination: Destination, platform: Platform | None
    ) -> PullResult:
        if self._metrics is None:
            return await self._pull(image, destination, platform)
        try:
            result = await self._pull(image, destination, platform)
        except BaseException as exc:
            self._metrics.pulled(pull_outcome(exc))
            raise
        self._metrics.pulled("ok")
        return result

    async def _pull(
        self, image: str, destination: Destination, platform: Platform | None
    ) -> PullResult:
        ref = parse_reference(image)
        authorizer = BrokerAuthorizer(
            self._broker, str(ref), registry=self._registry, metrics=self._metrics
        )
        grant = await authorizer.grant()
        if grant.repository and grant.repository != ref.repository:
            raise GrantMismatch(
                f"the broker granted repository {grant.repository!r} for {ref}, not "
                f"{ref.repository!r}: refusing to pull (check the broker's registry record)"
            )
        layout = destination.prepare()  # after the broker said yes: a denied pull writes nothing
        target: ContentStore | OciLayout | None = layout
        if self._store is not None:
            target = await asyncio.to_thread(ContentStore.open, self._store)
        if target is None:
            raise PullError(f"{destination.label} needs the node store: do not pass --no-store")
        url = grant.registry_url or f"https://{ref.registry_host}"
        context = ssl_context(grant.registry_ca_pem or None)
        fetcher = BlobFetcher(url, context, timeout=self._timeout)
        try:
            manifests = _Manifests(fetcher, authorizer, ref.repository)
            resolved = await self._resolve(manifests, ref, platform)
            job = BlobJob(fetcher, authorizer, target, ref.repository, self._progress)
            fetched = await self._download(job, resolved, destination, str(ref))
        finally:
            fetcher.close()
        config_platform = await asyncio.to_thread(_checked_config, target, resolved, str(ref))
        target.put_blob(resolved.descriptor, resolved.data)
        image_ = FetchedImage(ref, resolved.descriptor, resolved.data, resolved.manifest)
        name = await asyncio.to_thread(destination.export, image_, target)
        return PullResult(
            image=str(ref),
            digest=resolved.descriptor.digest,
            platform=resolved.descriptor.platform or config_platform,
            dest=destination.label,
            layers=len(resolved.manifest.layers),
            bytes=sum(d.size for d in resolved.manifest.blobs),
            fetched=fetched,
            image_id=resolved.manifest.config.digest,
            name=name,
        )

    async def _download(
        self,
        job: BlobJob[ContentStore | OciLayout],
        resolved: _Resolved,
        destination: Destination,
        image: str,
    ) -> int:
        """Check sizes and free space, then fetch what the store lacks; how many were fetched."""
        blobs = resolved.manifest.blobs
        self._limits.check(resolved.manifest, image)
        config = resolved.manifest.config
        if config.size > CONFIG_LIMIT:
            raise UnsupportedManifest(
                f"the config of {image} declares {config.size} bytes, more than {CONFIG_LIMIT}"
            )
        missing = await asyncio.to_thread(_missing, job.layout, blobs)
        needs = [(job.layout.root, _to_download(job.layout, missing))]
        needs += export_space(destination, blobs, from_store=isinstance(job.layout, ContentStore))
        await asyncio.to_thread(check_free_space, needs, image)
        present = len(blobs) - len(missing)
        fetched = await download_blobs(job, missing, concurrency=self._concurrency, present=present)
        if self._metrics is not None:
            # Declared sizes: a blob resumed from a partial download counts whole.
            self._metrics.bytes_fetched.inc(sum(d.size for d in missing))
            stored = {d.digest for d in missing}
            self._metrics.bytes_from_store.inc(sum(d.size for d in blobs if d.digest not in stored))
        return fetched

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


def _missing(target: ContentStore | OciLayout, blobs: Sequence[Descriptor]) -> list[Descriptor]:
    return [d for d in blobs if not target.has_blob(d)]


def _to_download(target: ContentStore | OciLayout, missing: Sequence[Descriptor]) -> int:
    """Bytes still to come: the node store already holds the start of interrupted ones."""
    if isinstance(target, ContentStore):
        return sum(d.size - target.partial_size(d) for d in missing)
    return sum(d.size for d in missing)


def _checked_config(source: BlobSource, resolved: _Resolved, image: str) -> Platform | None:
    """Parse the stored config (bounded): a bad one fails the pull before anything is tagged.

    Returns the platform it declares (for images pulled without an index).
    """
    config = resolved.manifest.config
    with source.open_blob(config.digest) as fh:
        data = fh.read(CONFIG_LIMIT + 1)
    return parse_config(data, image)
