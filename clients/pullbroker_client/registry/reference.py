"""Docker image references: parse, validate and normalise (distribution/reference grammar).

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [ domain "/" ] path
    domain           := host [ ":" port ]          host: domain-name | "[" ipv6 "]"
    domain-name      := component ( "." component )*   component: [a-zA-Z0-9] with inner "-"
    path             := path-component ( "/" path-component )*
    path-component   := [a-z0-9]+ ( separator [a-z0-9]+ )*     separator: "." | "_" | "__" | "-"+
    tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest           := algorithm ":" hex          sha256: 64 lowercase hex, sha512: 128

The first path element is a domain only if it holds "." or ":" or is "localhost" (Docker's
rule), so `team/app` is a Docker Hub repository. Normalisation follows Docker: no domain ->
docker.io, `index.docker.io` -> docker.io, a one-component Docker Hub path -> library/NAME,
neither tag nor digest -> tag latest. Host names are case-insensitive and kept lowercase, so
references compare equal exactly when they name the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pullbroker_client.registry.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
_DIGEST_HEX = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
_SHOWN = 80
_TAG_RULE = "a tag is 1-128 letters, digits, '_', '.' or '-', and cannot start with '.' or '-'"


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. Build it with `parse_reference`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def registry_host(self) -> str:
        """The host (and port) to connect to: Docker Hub's API lives on registry-1.docker.io."""
        return DOCKER_HUB_REGISTRY if self.domain == DOCKER_HUB else self.domain

    @property
    def repository(self) -> str:
        """The repository path inside the registry, e.g. `library/nginx`."""
        return self.path

    @property
    def name(self) -> str:
        """Domain and path, e.g. `docker.io/library/nginx`."""
        return f"{self.domain}/{self.path}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_reference(text: str) -> Reference:
    """Parse and normalise `text` (`nginx` -> `docker.io/library/nginx:latest`)."""
    rest, _, digest = text.partition("@")
    if "@" in text:
        check_digest(digest, context=text)
    name, tag = _split_tag(rest)
    if tag is not None and not _TAG.fullmatch(tag):
        raise _invalid(text, _TAG_RULE)
    domain, path = _split_domain(name)
    if domain is not None and not _DOMAIN.fullmatch(domain):
        raise _invalid(text, "the registry host is not a valid host[:port]")
    check_repository(path, context=text)
    domain = _normalise_domain(domain)
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _invalid(text, f"the name (registry host and repository) is over {NAME_MAX} chars")
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest or None)


def check_repository(path: str, *, context: str | None = None) -> str:
    """`path` if it is a valid repository path (`team/app`), else InvalidReference."""
    if _PATH.fullmatch(path):
        return path
    if _PATH.fullmatch(path.lower()):
        raise _invalid(context or path, "repository names must be lowercase")
    raise _invalid(
        context or path,
        "a repository is lowercase letters and digits in '/'-separated parts,"
        " joined inside a part by '.', '_', '__' or dashes",
    )


def check_tag(tag: str) -> str:
    """`tag` if it is a valid tag, else InvalidReference."""
    if not _TAG.fullmatch(tag):
        raise _invalid(tag, _TAG_RULE)
    return tag


def check_digest(digest: str, *, context: str | None = None) -> str:
    """`digest` if it is a supported `algorithm:hex` digest, else InvalidReference."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or not _DIGEST_ALGORITHM.fullmatch(algorithm):
        raise _invalid(context or digest, "a digest is algorithm:hex, e.g. sha256:<64 hex>")
    pattern = _DIGEST_HEX.get(algorithm)
    if pattern is None:
        raise _invalid(context or digest, "only sha256 and sha512 digests are supported")
    if not pattern.fullmatch(hex_part):
        size = 64 if algorithm == "sha256" else 128
        raise _invalid(context or digest, f"a {algorithm} digest is {size} lowercase hex digits")
    return digest


def is_digest(text: str) -> bool:
    """Whether `text` is a supported digest (as opposed to a tag)."""
    algorithm, sep, hex_part = text.partition(":")
    pattern = _DIGEST_HEX.get(algorithm)
    return bool(sep) and pattern is not None and pattern.fullmatch(hex_part) is not None


def _split_tag(name: str) -> tuple[str, str | None]:
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :]
    return name, None


def _split_domain(name: str) -> tuple[str | None, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, name


def _normalise_domain(domain: str | None) -> str:
    if domain is None:
        return DOCKER_HUB
    domain = domain.lower()
    return DOCKER_HUB if domain == "index.docker.io" else domain


def _invalid(text: str, why: str) -> InvalidReference:
    shown = text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
    return InvalidReference(f"invalid image reference {shown!r}: {why}")
