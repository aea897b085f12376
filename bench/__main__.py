"""`make bench`: run every benchmark in one process, each printing its side-by-side table.

Usage: python -m bench [NAME ...]
(names: token, pull, backends, helper, replicas, mirror; default all)
"""

from __future__ import annotations

import compileall
import importlib
import sys
import time
from pathlib import Path

BENCHMARKS = {
    "token": "bench.token_bench",
    "pull": "bench.pull_bench",
    "backends": "bench.backend_bench",
    "helper": "bench.helper_bench",
    "replicas": "bench.replica_bench",
    "mirror": "bench.mirror_bench",
}


def compile_sources() -> None:
    """Write the bytecode an installed package would have (pip compiles at install time).

    The project is installed editable, and PYTHONDONTWRITEBYTECODE may be set, in which case
    every measured process start would compile every module again: a cost no installed
    sidecar or credential helper pays.
    """
    root = Path(__file__).resolve().parents[1]
    for package in ("clients", "service", "sidecar"):
        compileall.compile_dir(root / package, quiet=1)


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    compile_sources()
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            if exc.name != BENCHMARKS[name]:
                raise
            continue  # a benchmark not built yet on this branch
        print(f"\n=== {name} ({time.strftime('%H:%M:%S')}) ===", flush=True)
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"benchmark {name} failed: {type(exc).__name__}: {exc}")
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
