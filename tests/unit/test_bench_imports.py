"""Benchmarks build on the shared harness, never on one test package's private helpers."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


class TestBenchImports:
    def test_no_benchmark_imports_an_integration_test_package(self) -> None:
        """bench/ uses tests.harness (shared with the tests), not tests.integration.*."""
        offenders = {
            path.name: sorted(
                m for m in imported_modules(path) if m.startswith("tests.integration")
            )
            for path in sorted(BENCH.glob("*.py"))
        }
        assert {name: mods for name, mods in offenders.items() if mods} == {}
