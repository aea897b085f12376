"""One registry host, one spelling: records and image references agree on the host string."""

from __future__ import annotations

import pytest
from pullbroker_service.domain.hosts import canonical_image_host, normalize_registry_url


class TestOneSpellingPerHost:
    @pytest.mark.parametrize(
        "url",
        [
            "https://[2606:4700::1111]",
            "https://[2606:4700:0::1111]",
            "https://[2606:4700:0000:0000:0000:0000:0000:1111]:443",
            "https://[2606:4700::1111]/v2/",
        ],
    )
    def test_ipv6_literals_are_compressed(self, url: str) -> None:
        """Every spelling of one IPv6 address is one record host, so two records for it
        are compared by the ambiguity check (they were two strings before)."""
        assert normalize_registry_url(url) == ("https://[2606:4700::1111]", "[2606:4700::1111]")

    def test_ipv6_port_kept(self) -> None:
        assert normalize_registry_url("https://[2606:4700:0::1111]:5000")[1] == (
            "[2606:4700::1111]:5000"
        )

    @pytest.mark.parametrize(
        ("reference_host", "record_host"),
        [
            ("[2606:4700:0::1111]", "[2606:4700::1111]"),
            ("[2606:4700:0::1111]:5000", "[2606:4700::1111]:5000"),
            ("[2606:4700::1111]:443", "[2606:4700::1111]"),
            ("Docker.io", "registry-1.docker.io"),
            ("ghcr.io:443", "ghcr.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
        ],
    )
    def test_image_references_name_the_record_host(
        self, reference_host: str, record_host: str
    ) -> None:
        assert canonical_image_host(reference_host) == record_host
