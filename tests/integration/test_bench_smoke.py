"""The benchmarks still run: the backend and replica benchmarks at a tiny size.

A product change (repository globs refusing tying records) broke both once without any test
noticing, and `make bench` then failed for the next person. These run each benchmark's own
code end to end against the same real servers, shrunk to a few operations; the figures are
not looked at, only that every row was measured.
"""

from __future__ import annotations

import pytest

from bench import backend_bench, replica_bench

pytestmark = pytest.mark.integration


def test_backend_bench_measures_every_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backend_bench, "ROUNDS", 1)
    monkeypatch.setattr(backend_bench, "OPS", {"local": 5, "vault": 5, "aws": 5})
    backend_bench.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    measured = {(row[0], row[1]) for row in rows if len(row) == 7 and row[2][0].isdigit()}
    assert measured == {
        (backend, op)
        for backend in ("local", "vault", "aws")
        for op in ("create", "read", "rotate")
    }


def test_replica_bench_runs_both_parts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(replica_bench, "STORM", 64)
    monkeypatch.setattr(replica_bench, "ROUNDS", 1)
    monkeypatch.setattr(replica_bench, "OPS", 8)
    replica_bench.main()
    out = capsys.readouterr().out
    assert "upstream requests per 3-replica storm <= 3: meets" in out, out
    assert "PostgreSQL/SQLite throughput: CreateRegistry" in out, out
