"""Platform parsing, host normalisation and choosing an index entry."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pullbroker_sidecar.errors import InvalidPlatform
from pullbroker_sidecar.pull.platform import Platform, choose, host_platform


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("linux/amd64", Platform("linux", "amd64")),
            ("linux/x86_64", Platform("linux", "amd64")),
            ("linux/aarch64", Platform("linux", "arm64")),
            ("linux/arm/v7", Platform("linux", "arm", "v7")),
            ("Linux/ARM64/v8", Platform("linux", "arm64", "v8")),
        ],
    )
    def test_parses_and_normalises(self, text: str, expected: Platform) -> None:
        """Architecture aliases become their OCI names."""
        assert Platform.parse(text) == expected

    @pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
    def test_rejects_malformed(self, text: str) -> None:
        """Anything but OS/ARCH[/VARIANT] is an InvalidPlatform naming the input."""
        with pytest.raises(InvalidPlatform, match="OS/ARCH"):
            Platform.parse(text)

    @pytest.mark.parametrize(
        ("machine", "expected"),
        [
            ("x86_64", "linux/amd64"),
            ("aarch64", "linux/arm64"),
            ("armv7l", "linux/arm/v7"),
            ("s390x", "linux/s390x"),
        ],
    )
    def test_host_platform(self, machine: str, expected: str) -> None:
        """`uname -m` names map to linux/<oci arch>[/variant]."""
        assert str(host_platform(machine)) == expected


class TestChoose:
    ENTRIES: ClassVar[list[Platform | None]] = [
        Platform("linux", "amd64"),
        Platform("linux", "arm64", "v8"),
        None,
        Platform("unknown", "unknown"),
        Platform("linux", "arm", "v6"),
        Platform("linux", "arm", "v7"),
    ]

    def test_picks_by_os_and_arch(self) -> None:
        """linux/arm64 matches the arm64 entry whatever its (default) variant."""
        assert choose(Platform.parse("linux/arm64"), self.ENTRIES) == 1

    def test_picks_by_variant(self) -> None:
        """linux/arm/v7 skips the v6 entry."""
        assert choose(Platform.parse("linux/arm/v7"), self.ENTRIES) == 5

    def test_default_variant_matches_a_bare_entry(self) -> None:
        """arm64/v8 matches an entry that states no variant (v8 is arm64's default)."""
        assert choose(Platform.parse("linux/arm64/v8"), [Platform("linux", "arm64")]) == 0

    def test_none_when_absent(self) -> None:
        """No entry for the platform: None (the engine says what is offered)."""
        assert choose(Platform.parse("linux/s390x"), self.ENTRIES) is None
