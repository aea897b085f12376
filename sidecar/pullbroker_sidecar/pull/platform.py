"""Platforms (`os/arch[/variant]`) and choosing one manifest from an image index.

Matching follows containerd's rules where they matter for pulls: architecture names are
normalised (x86_64 -> amd64, aarch64 -> arm64), arm64's default variant is v8, and an
index entry without a variant matches a request without one.
"""

from __future__ import annotations

import platform as _host
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pullbroker_sidecar.errors import InvalidPlatform

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# Variants implied by a machine name (`uname -m`) or an alias.
_ARCH_VARIANT = {"armv7l": "v7", "armhf": "v7", "armv6l": "v6", "armel": "v6"}
# An index entry that omits the variant means the architecture's default one.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: `os`, `architecture` and an optional `variant`."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/arm64`, `linux/arm/v7`, `linux/x86_64` (normalised to amd64)."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidPlatform(
                f"platform {text!r} is not OS/ARCH or OS/ARCH/VARIANT (e.g. linux/arm64)"
            )
        arch = _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else _ARCH_VARIANT.get(parts[1], "")
        return cls(parts[0], arch, variant)

    @classmethod
    def from_json(cls, data: Any) -> Platform | None:
        """The `platform` object of an index entry; None when absent or malformed."""
        if not isinstance(data, dict):
            return None
        os_, arch = data.get("os"), data.get("architecture")
        variant = data.get("variant") or ""
        if not isinstance(os_, str) or not isinstance(arch, str) or not isinstance(variant, str):
            return None
        return cls(os_, arch, variant)

    def to_json(self) -> dict[str, str]:
        """The OCI descriptor `platform` object."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def host_platform(machine: str | None = None) -> Platform:
    """This host as a Linux platform (images for nodes are Linux images)."""
    raw = (machine if machine is not None else _host.machine()).lower()
    arch = _ARCH_ALIASES.get(raw, raw)
    return Platform("linux", arch, _ARCH_VARIANT.get(raw, ""))


def _variant(platform: Platform) -> str:
    return platform.variant or _DEFAULT_VARIANT.get(platform.architecture, "")


def matches(wanted: Platform, candidate: Platform) -> bool:
    """True when `candidate` can run where `wanted` is asked for."""
    if (wanted.os, wanted.architecture) != (candidate.os, candidate.architecture):
        return False
    if not wanted.variant:
        return True
    return _variant(wanted) == _variant(candidate)


def choose(wanted: Platform, candidates: Sequence[Platform | None]) -> int | None:
    """The index of the best entry for `wanted`, or None.

    An exact variant match beats an entry that only matches on os/arch (e.g. asking for
    linux/arm64 prefers a `v8` or variant-less entry to a `v9` one).
    """
    best: tuple[int, int] | None = None
    for i, candidate in enumerate(candidates):
        if candidate is None or not matches(wanted, candidate):
            continue
        rank = 0 if _variant(candidate) == _variant(wanted) else 1
        if best is None or rank < best[0]:
            best = (rank, i)
    return None if best is None else best[1]
