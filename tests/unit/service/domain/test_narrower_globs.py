"""Which of two repository globs lies inside the other (what a node's policy and a record's
globs leave it, in ListPullableRegistries)."""

from __future__ import annotations

import pytest
from pullbroker_service.domain.repository_globs import narrower


class TestNarrower:
    """A glob inside another is the narrower one; globs sharing nothing give None."""

    @pytest.mark.parametrize(
        ("a", "b", "inside"),
        [
            ("team/*", "team/app", "team/app"),
            ("team/app", "team/*", "team/app"),
            ("team/**", "team/*", "team/*"),
            ("**", "x/?", "x/?"),
            ("team/*", "other/*", None),
            ("team/*", "team/a/b", None),
            ("team/?", "team/*", "team/?"),
        ],
    )
    def test_narrower(self, a: str, b: str, inside: str | None) -> None:
        """The result is the glob whose every repository the other also matches."""
        assert narrower(a, b) == inside
