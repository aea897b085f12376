"""Which upstream registry, repository and object a mirror request names (no I/O).

Runtimes name the upstream three ways:

    containerd (hosts.toml)        /v2/team/app/manifests/v1?ns=ghcr.io
    CRI-O, podman (registries.conf /v2/ghcr.io/team/app/manifests/v1   (mirror location
      location = "127.0.0.1:P/ghcr.io")                              "127.0.0.1:P/ghcr.io")
    dockerd (registry-mirrors)     /v2/library/nginx/manifests/latest  (Docker Hub only)

A first path part that looks like a host (has a `.` or `:`, or is `localhost`, the rule
Docker references follow) is the registry; without `ns` or such a part it is Docker Hub.
A registry with a port is written `host_port` in a registries.conf prefix
(`127.0.0.1:P/registry.local_5000`): containers/image rewrites the reference to
`MIRROR/PREFIX/repo` and refuses a `:` inside it, and no registry host has a `_`.
Names are checked by the registry client's reference grammar, so a request can never name
a path outside the store (`..`, absolute paths) or an unsupported digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pullbroker_client.registry.errors import InvalidReference
from pullbroker_client.registry.reference import check_digest, parse_reference

from pullbroker_sidecar.errors import MirrorRefusal

_OBJECT = re.compile(r"\A/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)\Z")

Kind = Literal["base", "manifest", "blob"]


@dataclass(frozen=True)
class Route:
    """What a request asks for: `kind`, on `host`/`repository`, by `reference`
    (a tag or a digest; always a digest for blobs)."""

    kind: Kind
    host: str = ""
    repository: str = ""
    reference: str = ""

    @property
    def image(self) -> str:
        """`host/repository`: what the broker is asked a token for."""
        return f"{self.host}/{self.repository}"

    @property
    def by_digest(self) -> bool:
        """True when the reference is content-addressed (servable from the node store)."""
        return ":" in self.reference


def route(path: str, ns: str | None) -> Route:
    """The route of a request path (without its query); MirrorRefusal 404/400 otherwise."""
    if path in ("/v2", "/v2/"):
        return Route("base")
    match = _OBJECT.match(path)
    if match is None:
        raise MirrorRefusal(404, "UNSUPPORTED", "this mirror serves manifests and blobs only")
    name, kind, reference = match["name"], match["kind"], match["ref"]
    host, repository = _split(name, ns)
    try:
        if kind == "blobs":
            check_digest(reference, context=f"{name}/blobs/{reference}")
            parsed = parse_reference(f"{host}/{repository}@{reference}")
        else:
            separator = "@" if ":" in reference else ":"
            parsed = parse_reference(f"{host}/{repository}{separator}{reference}")
    except InvalidReference as exc:
        code = "DIGEST_INVALID" if kind == "blobs" else "NAME_INVALID"
        raise MirrorRefusal(400, code, str(exc)) from None
    return Route(
        "blob" if kind == "blobs" else "manifest",
        parsed.domain,
        parsed.repository,
        reference,
    )


_PORTED = re.compile(r"\A(?P<host>[a-z0-9.-]+)_(?P<port>[0-9]{1,5})\Z")


def path_prefix(host: str) -> str:
    """How `host` is written as a registries.conf mirror prefix (`:` becomes `_`)."""
    return host.replace(":", "_")


def _split(name: str, ns: str | None) -> tuple[str, str]:
    if ns:
        return ns, name
    first, _, rest = name.partition("/")
    ported = _PORTED.match(first)
    if rest and ported and ("." in ported["host"] or ported["host"] == "localhost"):
        return f"{ported['host']}:{ported['port']}", rest
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "docker.io", name
