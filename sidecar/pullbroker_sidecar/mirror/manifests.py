"""Manifests through the mirror: by digest from the node store, by tag from upstream.

A tag is resolved upstream on every request (a tag moves; the registry is the authority),
and what it resolves to is stored by digest, verified, so the runtime's next request (the
platform manifest, by digest) is answered from the store. With `serve_stale` seconds, a
tag whose registry is unreachable is answered with the manifest it last resolved to, if
that was at most that long ago (off by default).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pullbroker_client.registry.document import load_object
from pullbroker_client.registry.errors import RegistryError, RegistryProtocolError
from pullbroker_client.registry.mediatypes import MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST
from pullbroker_client.registry.rules import MANIFEST_LIMIT
from pullbroker_client.registry.verify import manifest_media_type

from pullbroker_sidecar.errors import LayoutError
from pullbroker_sidecar.mirror.routes import Route
from pullbroker_sidecar.mirror.upstream import Upstream
from pullbroker_sidecar.pull.manifest import Descriptor
from pullbroker_sidecar.pull.store import ContentStore

MAX_TAGS = 4096


@dataclass(frozen=True)
class Manifest:
    """A manifest as the mirror answers it."""

    media_type: str
    digest: str
    data: bytes


def accepted(header: str | None) -> Sequence[str]:
    """The media types a runtime's Accept header names (the defaults when it names none)."""
    types = [part.split(";", 1)[0].strip() for part in (header or "").split(",")]
    return [t for t in types if t and t != "*/*"] or MANIFEST_ACCEPT


def media_type_of(data: bytes) -> str:
    """A stored manifest's media type: its own field, else what its shape says."""
    declared = manifest_media_type(None, data)
    if declared:
        return declared
    try:
        document = load_object(data, "a stored manifest")
    except RegistryProtocolError:
        return OCI_MANIFEST
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


class Manifests:
    """Answers manifest requests for the mirror."""

    def __init__(self, store: ContentStore, *, serve_stale: float) -> None:
        self._store = store
        self._serve_stale = serve_stale
        self._tags: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    async def get(self, route: Route, upstream: Upstream, accept: Sequence[str]) -> Manifest:
        """The manifest `route` names (RegistryError and friends when there is none)."""
        if route.by_digest:
            stored = await asyncio.to_thread(self.stored, route.reference)
            if stored is not None:
                return stored
        try:
            fetched = await upstream.manifest(route.reference, accept)
        except RegistryError as exc:
            stale = await self._stale(route, exc)
            if stale is None:
                raise
            return stale
        media_type = fetched.media_type or media_type_of(fetched.data)
        descriptor = Descriptor(media_type, fetched.digest, len(fetched.data))
        await asyncio.to_thread(self._store.put_blob, descriptor, fetched.data)
        if not route.by_digest:
            self._remember(route, fetched.digest)
        return Manifest(media_type, fetched.digest, fetched.data)

    def stored(self, digest: str) -> Manifest | None:
        """A manifest the node store holds (verified), or None."""
        size = self._store.stored_size(digest)
        if size is None or size > MANIFEST_LIMIT:
            return None
        try:
            with self._store.open_blob(digest) as fh:
                data = fh.read(size)
        except LayoutError:
            return None
        self._store.touch(digest)
        return Manifest(media_type_of(data), digest, data)

    def _remember(self, route: Route, digest: str) -> None:
        if self._serve_stale <= 0:
            return
        key = (route.image, route.reference)
        self._tags[key] = (digest, time.monotonic())
        self._tags.move_to_end(key)
        while len(self._tags) > MAX_TAGS:
            self._tags.popitem(last=False)

    async def _stale(self, route: Route, exc: RegistryError) -> Manifest | None:
        known = self._tags.get((route.image, route.reference))
        if known is None or not exc.temporary:
            return None
        digest, when = known
        if time.monotonic() - when > self._serve_stale:
            return None
        return await asyncio.to_thread(self.stored, digest)
