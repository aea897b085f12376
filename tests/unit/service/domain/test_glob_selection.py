"""Choosing among a host's records by repository globs, on the IssuePullToken path."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pullbroker_service.domain import repository_globs
from pullbroker_service.domain.globs import Glob
from pullbroker_service.domain.repository_globs import select


@dataclass(frozen=True)
class Rec:
    display_name: str
    repositories: tuple[str, ...]


class TestSelect:
    def test_most_specific_wins_and_ties_are_listed(self) -> None:
        app, team, other = Rec("app", ("team/app",)), Rec("team", ("team/*",)), Rec("o", ())
        assert select([team, app, other], "team/app").chosen == app
        assert select([team, app, other], "team/web").chosen == team
        assert select([team, app, other], "else/x").chosen == other
        tie = [Rec("a", ()), Rec("b", ())]
        assert select(tie, "x/y").tied == tuple(tie)

    def test_a_repeated_selection_compiles_no_glob(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every IssuePullToken selects among its host's records: a pattern's regex is built
        once, not on every call."""
        built: list[str] = []
        real = Glob

        def counting(pattern: str) -> object:
            built.append(pattern)
            return real(pattern)

        monkeypatch.setattr(repository_globs, "Glob", counting)
        repository_globs._compiled.cache_clear()
        records = [Rec("a", ("hot/path/*",)), Rec("b", ("hot/path/**",))]
        assert select(records, "hot/path/x") == select(records, "hot/path/x")
        assert sorted(built) == ["hot/path/*", "hot/path/**"]
