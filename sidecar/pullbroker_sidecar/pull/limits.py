"""How much one pull may bring onto the node: per blob, per image, and what the disk holds.

A manifest can declare any size (a 1 TiB layer parses like any other), and a pull would
only find out by filling the disk. So the sizes a manifest declares are checked against
`PullLimits` before any blob is requested, and the free space of every file system the
pull writes to (`statvfs`) against what it is about to write. Sizes are the registry's
own claim; the writers refuse any byte past a descriptor's size, so the claim binds.

Defaults: the largest images nodes commonly run (NVIDIA's CUDA and PyTorch containers)
are about 10 GiB compressed, with single layers of up to ~5 GiB; 10 GiB per blob and
20 GiB per image leave twice that headroom and still refuse a manifest declaring
terabytes. Both are raised with `--max-blob-size` / `--max-image-size`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pullbroker_sidecar.errors import InsufficientSpace, SizeLimitExceeded
from pullbroker_sidecar.pull.manifest import ImageManifest

GIB = 1 << 30
DEFAULT_MAX_BLOB = 10 * GIB
DEFAULT_MAX_IMAGE = 20 * GIB
BLOB_FLAG = "--max-blob-size"
IMAGE_FLAG = "--max-image-size"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\A\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class PullLimits:
    """What a manifest may declare before the pull is refused."""

    max_blob: int = DEFAULT_MAX_BLOB
    """Largest single blob (the config or one layer), in bytes; `--max-blob-size`."""

    max_image: int = DEFAULT_MAX_IMAGE
    """Largest image (config and layers, each distinct blob once), in bytes; `--max-image-size`."""

    def check(self, manifest: ImageManifest, image: str) -> None:
        """SizeLimitExceeded naming the flag to raise, before anything is downloaded."""
        for descriptor in manifest.blobs:
            if descriptor.size > self.max_blob:
                raise SizeLimitExceeded(
                    f"{image}: blob {descriptor.digest} declares {format_size(descriptor.size)}, "
                    f"more than {BLOB_FLAG} {format_size(self.max_blob)}; nothing was downloaded "
                    f"(raise {BLOB_FLAG} if this image is expected)"
                )
        total = sum(d.size for d in manifest.blobs)
        if total > self.max_image:
            raise SizeLimitExceeded(
                f"{image} declares {format_size(total)} of blobs, more than {IMAGE_FLAG} "
                f"{format_size(self.max_image)}; nothing was downloaded "
                f"(raise {IMAGE_FLAG} if this image is expected)"
            )


def parse_size(text: str) -> int:
    """`10GiB`, `500M`, `1t`, `4096` (bytes): binary units; ValueError otherwise."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size such as 500MiB, 10GiB or 4096")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def format_size(size: int) -> str:
    """Bytes in the largest binary unit that keeps a leading digit (`1.5 GiB`)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def check_free_space(needs: Iterable[tuple[Path, int]], image: str) -> None:
    """InsufficientSpace unless each file system has room for what goes to it.

    `needs` pairs a folder (or a path whose nearest existing parent is on the right file
    system) with bytes to be written there; two folders on one file system add up.
    """
    per_device: dict[int, tuple[Path, int]] = {}
    for path, size in needs:
        if size <= 0:
            continue
        existing = _existing(path)
        device = os.stat(existing).st_dev
        _, before = per_device.get(device, (existing, 0))
        per_device[device] = (existing, before + size)
    for where, needed in per_device.values():
        vfs = os.statvfs(where)
        available = vfs.f_bavail * vfs.f_frsize
        if needed > available:
            raise InsufficientSpace(
                f"not enough free space to pull {image}: it needs {format_size(needed)} on the "
                f"file system of {where}, which has {format_size(available)} available; "
                "free some space or choose another --store or --dest"
            )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
