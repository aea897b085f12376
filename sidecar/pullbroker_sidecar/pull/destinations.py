"""Where a pulled image goes: an OCI layout, a docker-archive file, dockerd or containerd.

    oci:DIR                       an OCI image layout, tagged with the image's tag
    docker-archive:FILE           a tar `docker load`, `podman load`, `ctr import` all read
    docker-daemon[:SOCKET]        loaded into dockerd through its API (default $DOCKER_HOST,
                                  else unix:///var/run/docker.sock); no docker CLI needed;
                                  also tagged `repo:sha256-<hex>` (see pinned_tag)
    containerd[:NAMESPACE]        imported into containerd's content store with `ctr images
                                  import` (namespace k8s.io by default: what the kubelet sees)

Blobs come from the node store (see store.py; an `oci:` layout gets its own copies, never
hard links) or, for `oci:` without a store, were downloaded into the layout itself. A
destination is prepared only after the broker granted the pull, so a denied pull touches
nothing, and filled only once every blob verified.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from pullbroker_client.registry.errors import InvalidReference
from pullbroker_client.registry.reference import Reference, is_digest, parse_reference

from pullbroker_sidecar.errors import DestinationError, InvalidOption
from pullbroker_sidecar.pull.archive import ArchiveImage, write_archive
from pullbroker_sidecar.pull.docker_api import DockerEngine
from pullbroker_sidecar.pull.layout import OciLayout
from pullbroker_sidecar.pull.manifest import Descriptor, ImageManifest
from pullbroker_sidecar.pull.platform import host_platform, matches
from pullbroker_sidecar.pull.store import ContentStore, copy_blobs

DEFAULT_NAMESPACE = "k8s.io"
CONTAINERD_ENV = "CONTAINERD_ADDRESS"
DEFAULT_CONTAINERD = "/run/containerd/containerd.sock"
_CTR_TIMEOUT = 600.0
DEST_FORMS = "oci:DIR, docker-archive:FILE, docker-daemon[:SOCKET] or containerd[:NAMESPACE]"
PIN_PREFIX = "sha256-"
NO_REPO_DIGESTS = (
    "dockerd records a RepoDigest (what `repo@sha256:...` resolves to) only for an image it "
    "pulled from a registry itself; an image loaded through its API gets none, and dockerd "
    "refuses to tag one with a digest"
)


def pinned_tag(digest: str) -> str:
    """The tag standing in for `digest` in dockerd: `sha256:<hex>` -> `sha256-<hex>`.

    NO_REPO_DIGESTS says why: `repo@sha256:<hex>` cannot name a loaded image, so the
    `docker-daemon` destination also tags it `repo:sha256-<hex>`, written only after every
    blob matched its digest, for `docker run` and Compose files to use instead.
    """
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}"


def pinned_names(reference: Reference, manifest_digest: str) -> tuple[str, ...]:
    """`repo:sha256-<hex>` for the image manifest, and for the digest the reference named
    when that is another (an index's: the platform chosen from it)."""
    digests = [manifest_digest]
    if reference.digest and reference.digest not in digests:
        digests.append(reference.digest)
    return tuple(f"{reference.name}:{pinned_tag(d)}" for d in digests)


def unpinned(image: str) -> str:
    """`repo:sha256-<hex>` as the digest reference `repo@sha256:<hex>` it stands for, so a
    Compose file naming the pinned tag pulls that digest; anything else unchanged."""
    try:
        ref = parse_reference(image)
    except InvalidReference:
        return image  # the pull reports it
    digest = pinned_digest(ref.tag)
    if digest is None or ref.digest is not None:
        return image
    return f"{ref.name}@{digest}"


def pinned_digest(tag: str | None) -> str | None:
    """The digest a `sha256-<hex>` tag stands for (pinned_tag's inverse), else None."""
    if tag is None or not tag.startswith(PIN_PREFIX):
        return None
    digest = "sha256:" + tag[len(PIN_PREFIX) :]
    return digest if is_digest(digest) else None


class BlobSource(Protocol):
    """Where verified blobs can be read from (the store, or the layout pulled into)."""

    def open_blob(self, digest: str) -> BinaryIO:
        """The verified blob's file, opened for reading (never through a symlink)."""


@dataclass(frozen=True)
class FetchedImage:
    """A pulled image, every blob verified and stored."""

    reference: Reference
    manifest: Descriptor
    manifest_data: bytes
    image: ImageManifest

    def archive(self, *, digest_names: bool, pinned: bool = False) -> ArchiveImage:
        """The archive view; `digest_names` names a digest-only pull `repo@digest`, and
        `pinned` adds the `repo:sha256-<hex>` tags of `pinned_names` for dockerd."""
        ref = self.reference
        if ref.tag:
            name: str | None = f"{ref.name}:{ref.tag}"
        else:
            name = str(ref) if digest_names else None
        aliases = self.pinned_names() if pinned else ()
        return ArchiveImage(
            name, ref.tag, self.manifest, self.image.config, self.image.layers, aliases
        )

    def pinned_names(self) -> tuple[str, ...]:
        """See the module function `pinned_names`."""
        return pinned_names(self.reference, self.manifest.digest)


class Destination(Protocol):
    """One kind of destination."""

    label: str

    def prepare(self) -> OciLayout | None:
        """Check it can take an image; an OCI destination returns its layout."""

    def export(self, fetched: FetchedImage, source: BlobSource) -> str:
        """Put the image there; returns what the destination now calls it."""


@dataclass
class OciDestination:
    """`oci:DIR`."""

    path: Path
    label: str = ""

    def __post_init__(self) -> None:
        self.label = f"oci:{self.path}"

    def prepare(self) -> OciLayout:
        self._layout = OciLayout.open(self.path)
        return self._layout

    def export(self, fetched: FetchedImage, source: BlobSource) -> str:
        if isinstance(source, ContentStore):
            copy_blobs(source, self._layout, fetched.image.blobs)
        self._layout.put_blob(fetched.manifest, fetched.manifest_data)
        self._layout.tag(fetched.manifest, fetched.reference.tag)
        return f"{self.label}:{fetched.reference.tag}" if fetched.reference.tag else self.label


@dataclass
class DockerArchiveDestination:
    """`docker-archive:FILE`, written to a temp file beside FILE and renamed into place."""

    path: Path
    label: str = ""

    def __post_init__(self) -> None:
        self.label = f"docker-archive:{self.path}"

    def prepare(self) -> None:
        if not self.path.parent.is_dir():
            raise DestinationError(f"cannot write {self.path}: {self.path.parent} is not a folder")

    def export(self, fetched: FetchedImage, source: BlobSource) -> str:
        image = fetched.archive(digest_names=False)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".pull-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write_archive(fh, image, source.open_blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(name, 0o644)
            os.replace(name, self.path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return self.label


@dataclass
class DockerDaemonDestination:
    """`docker-daemon[:SOCKET]`: `POST /images/load`, then checked with an inspect.

    Besides the reference's own tag, the image is tagged `repo:sha256-<hex>` with its
    manifest digest (and the index digest it was pulled by), since dockerd cannot be made
    to resolve `repo@sha256:<hex>` for a loaded image (NO_REPO_DIGESTS).
    """

    host: str | None = None
    label: str = "docker-daemon"

    def prepare(self) -> None:
        self._engine = DockerEngine(self.host)
        if not os.path.exists(self._engine.path):
            raise DestinationError(
                f"dockerd's socket {self._engine.path} does not exist: start dockerd, or name "
                "its socket with docker-daemon:unix:///PATH or DOCKER_HOST"
            )

    def export(self, fetched: FetchedImage, source: BlobSource) -> str:
        image = fetched.archive(digest_names=False, pinned=True)

        def stream(out: IO[bytes]) -> None:
            write_archive(out, image, source.open_blob)

        self._engine.load(stream)
        # Docker's image ID is the config digest (the manifest's, with the containerd image
        # store of Docker 25+): one of them must be there now, under every name given.
        ids = (image.config.digest, image.manifest.digest)
        for name in image.names:
            found = self._engine.image(name)
            if found is None or found.get("Id") not in ids:
                raise DestinationError(
                    f"dockerd accepted {fetched.reference} but holds no image "
                    f"{image.config.digest} as {name}"
                )
        return image.name or image.aliases[0]


@dataclass
class ContainerdDestination:
    """`containerd[:NAMESPACE]`: the archive streamed into `ctr images import -`."""

    namespace: str = DEFAULT_NAMESPACE
    address: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.label = f"containerd:{self.namespace}"
        self.address = self.address or os.environ.get(CONTAINERD_ENV) or DEFAULT_CONTAINERD

    def prepare(self) -> None:
        ctr = shutil.which("ctr")
        if ctr is None:
            raise DestinationError(
                "`ctr` (containerd's client) is not installed: install containerd, "
                "or pull to docker-archive:FILE and import it yourself"
            )
        self._ctr = ctr
        assert self.address is not None
        if not os.path.exists(self.address):
            raise DestinationError(
                f"containerd's socket {self.address} does not exist: start containerd or "
                f"set {CONTAINERD_ENV}"
            )

    def export(self, fetched: FetchedImage, source: BlobSource) -> str:
        image = fetched.archive(digest_names=True)
        argv = [self._ctr, "--address", str(self.address), "--namespace", self.namespace]
        argv += ["images", "import", *_platform_flags(fetched), "-"]
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
            )
            assert proc.stdin is not None
            try:
                write_archive(proc.stdin, image, source.open_blob)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ctr stopped reading: its exit status and stderr say why
            finally:
                status = _wait(proc)
            if status != 0:
                errors.seek(0)
                detail = errors.read(2000).decode("utf-8", "replace").strip().splitlines()
                raise DestinationError(
                    f"`ctr images import` into containerd namespace {self.namespace} failed "
                    f"(exit {status}): {detail[-1] if detail else 'no message'}"
                )
        return image.name or image.manifest.digest


def _platform_flags(fetched: FetchedImage) -> list[str]:
    """ctr imports (and unpacks) only the host's platform unless told otherwise."""
    platform = fetched.manifest.platform
    if platform is None or matches(host_platform(), platform):
        return []
    return ["--all-platforms", "--no-unpack"]  # another platform's layers cannot unpack here


def _wait(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=_CTR_TIMEOUT)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def export_space(
    destination: Destination, blobs: Sequence[Descriptor], *, from_store: bool
) -> list[tuple[Path, int]]:
    """Where the export writes on this node, and about how much (for the free-space check).

    An `oci:` layout filled from the store gets a copy of each blob it lacks; an archive
    holds every blob; dockerd and containerd keep images on their own disks.
    """
    if isinstance(destination, OciDestination) and from_store:
        layout = OciLayout(destination.path)
        lacking = [d for d in blobs if not os.path.lexists(layout.blob_path(d.digest))]
        return [(destination.path, sum(d.size for d in lacking))]
    if isinstance(destination, DockerArchiveDestination):
        return [(destination.path.parent, sum(d.size for d in blobs))]
    return []


def parse_destination(text: str) -> Destination:
    """The destination `--dest TEXT` names; InvalidOption saying the accepted forms if none."""
    kind, sep, rest = text.partition(":")
    if kind == "oci" and rest:
        return OciDestination(_path(rest))
    if kind == "docker-archive" and rest:
        return DockerArchiveDestination(_path(rest))
    if kind == "docker-daemon":
        return DockerDaemonDestination(rest or None)
    if kind == "containerd" and (rest or not sep):
        return ContainerdDestination(rest or DEFAULT_NAMESPACE)
    raise InvalidOption(f"--dest {text!r} is not oci:DIR (accepted: {DEST_FORMS})")


def _path(text: str) -> Path:
    return Path(text).expanduser().absolute()
