"""Size limits on what a manifest declares, sizes on the command line, and free space."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pullbroker_sidecar.errors import InsufficientSpace, SizeLimitExceeded
from pullbroker_sidecar.pull.limits import (
    DEFAULT_MAX_BLOB,
    PullLimits,
    check_free_space,
    parse_size,
)
from pullbroker_sidecar.pull.manifest import Descriptor, ImageManifest

TIB = 1 << 40


def _manifest(*sizes: int) -> ImageManifest:
    config = Descriptor("c", "sha256:" + "c" * 64, 100)
    layers = tuple(Descriptor("l", f"sha256:{i:064x}", s) for i, s in enumerate(sizes, 1))
    return ImageManifest(config, layers)


class TestLimits:
    def test_a_terabyte_layer_is_refused_naming_the_flag(self) -> None:
        """A layer declaring 1 TiB fails before any download, naming --max-blob-size."""
        with pytest.raises(SizeLimitExceeded, match=r"1\.0 TiB, more than --max-blob-size 10\.0"):
            PullLimits().check(_manifest(1024, TIB), "r/team/app:v1")

    def test_the_image_total_is_limited_too(self) -> None:
        """Blobs each under the blob limit but too many together name --max-image-size."""
        limits = PullLimits(max_blob=DEFAULT_MAX_BLOB, max_image=3000)
        with pytest.raises(SizeLimitExceeded, match="--max-image-size"):
            limits.check(_manifest(1000, 1000, 1000), "i")

    def test_a_layer_listed_twice_counts_once(self) -> None:
        """The image size counts each distinct blob once, as it is downloaded once."""
        manifest = ImageManifest(
            Descriptor("c", "sha256:" + "c" * 64, 100),
            (Descriptor("l", "sha256:" + "1" * 64, 900),) * 3,
        )
        PullLimits(max_image=1000).check(manifest, "i")

    @pytest.mark.parametrize(
        ("text", "size"),
        [("4096", 4096), ("500MiB", 500 << 20), ("10GiB", 10 << 30), ("1t", TIB), ("2 KB", 2048)],
    )
    def test_sizes_parse_with_binary_units(self, text: str, size: int) -> None:
        """Bytes, or K/M/G/T with an optional iB/B, all binary."""
        assert parse_size(text) == size

    @pytest.mark.parametrize("text", ["", "ten", "-1", "1.5G", "5PB"])
    def test_bad_sizes_are_refused(self, text: str) -> None:
        """Anything else is a ValueError saying what a size looks like."""
        with pytest.raises(ValueError, match="not a size"):
            parse_size(text)


class TestFreeSpace:
    def test_more_than_the_disk_holds_says_needed_and_available(self, tmp_path: Path) -> None:
        """Needing more than is free names the folder, what is needed and what is available."""
        with pytest.raises(InsufficientSpace, match=r"needs 4096\.0 TiB .* available"):
            check_free_space([(tmp_path / "store", 4096 * TIB)], "i")

    def test_folders_on_one_file_system_add_up(self, tmp_path: Path) -> None:
        """Two halves that each fit but not together are refused."""
        vfs = os.statvfs(tmp_path)
        half = vfs.f_bavail * vfs.f_frsize // 2 + 1
        check_free_space([(tmp_path / "a", half)], "i")
        with pytest.raises(InsufficientSpace):
            check_free_space([(tmp_path / "a", half), (tmp_path / "b", half)], "i")
