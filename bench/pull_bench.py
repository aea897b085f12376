"""Pull benchmark: `pullbroker-sidecar pull` beside `skopeo copy`, same registry, same image.

A ≥256 MiB image of several gzip layers is built once (cached under .cache/bench) and
pushed to a fresh token-auth registry from the test harness; a real broker (`pullbroker
serve`) holds the registry credential. Each measured run is a separate process writing a
fresh `oci:` layout: ours gets its token from the broker over mTLS exactly as on a node,
skopeo gets the same user's credentials from an auth file. Runs alternate between the two
after one unmeasured warm-up each; the table shows medians and the worst peak RSS (each
process's own, measured by a small launcher: see `measure`).

    python -m bench pull            (or: python -m bench.pull_bench [RUNS])
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.broker_process import BrokerProcess
from tests.harness.certs import TestCA
from tests.harness.images import BuiltImage, build_image, push_image
from tests.harness.process import require_tool
from tests.harness.registry import TokenAuthRegistry
from tests.harness.skopeo import auth_file
from tests.harness.standard import ALICE, PUSHER, add_standard_users

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
MIB = 1024 * 1024
LAYER_MIB = (96, 64, 48, 32, 16)  # 256 MiB in five layers
TAG = "big"
REPOSITORY = "team/bench"
RUNS = 5
TARGET_RATIO = 1.0
TARGET_RSS_MIB = 100.0


@dataclass(frozen=True)
class Run:
    """One measured process: wall seconds and peak resident set (MiB)."""

    wall: float
    rss_mib: float


def cached_image() -> BuiltImage:
    """The benchmark image, built on first use (fixed seed: same bytes every time)."""
    return cached_layout_image("pull-image", LAYER_MIB, TAG, seed=20240601)


def cached_layout_image(
    prefix: str, layer_mib: Sequence[int], tag: str, *, seed: int
) -> BuiltImage:
    """An OCI layout of random layers under CACHE, built once per (prefix, sizes): the same
    bytes every time for one seed."""
    layout = CACHE / f"{prefix}-{'-'.join(map(str, layer_mib))}"
    done = layout / ".built"
    if not done.exists():
        shutil.rmtree(layout, ignore_errors=True)
        print(f"building a {sum(layer_mib)} MiB image in {layout} (once)...", flush=True)
        build_image(layout, tag, [n * MIB for n in layer_mib], seed=seed)
        done.write_text("ok\n")
    return build_image_record(layout, tag)


def build_image_record(layout: Path, tag: str) -> BuiltImage:
    """Re-read what the cached layout holds (digest and manifest) without rebuilding."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    return BuiltImage(layout, tag, entry["digest"], entry["mediaType"], ())


# A tiny launcher measures each run: a process started straight from this (large) one
# would inherit its resident size as the floor of ru_maxrss, so a small interpreter forks the
# command and reports its wall time, its own peak (ru_maxrss, KiB) and its exit status.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as fh:
    fh.write(f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[Run, str]:
    """Run `argv` to completion: wall time, its own peak RSS, its stdout."""
    with tempfile.NamedTemporaryFile(prefix="rusage-", dir=CACHE) as report:
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, report.name, *argv]
        result = subprocess.run(launcher, capture_output=True, text=True, env=env, check=False)
        wall_text, maxrss, status = Path(report.name).read_text().split()
        wall = float(wall_text)
        if int(status) != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({status}): {result.stderr.strip()}")
    return Run(wall, int(maxrss) / 1024), result.stdout


def _ours(broker: BrokerProcess, image: str, dest: Path) -> list[str]:
    return [
        sys.executable, "-m", "pullbroker_sidecar.cli", "pull", image,
        "--dest", f"oci:{dest}", "--output", "json", "--quiet",
        "--home", str(broker.home.root),
    ]  # fmt: skip


def _skopeo(registry: TokenAuthRegistry, auth: Path, image: str, dest: Path) -> list[str]:
    return [
        require_tool("skopeo"), "--insecure-policy", "copy", "-q",
        "--src-cert-dir", str(registry.ca_dir), "--src-authfile", str(auth),
        f"docker://{image}", f"oci:{dest}:{TAG}",
    ]  # fmt: skip


def _isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), XDG_CONFIG_HOME=str(home))
    return env


def compare(work: Path, runs: int) -> tuple[list[Run], list[Run], BuiltImage]:
    """Start registry and broker, push, then alternate measured pulls."""
    built = cached_image()
    ca = TestCA.create(work / "ca", "pull bench CA")
    registry = TokenAuthRegistry(work / "registry", ca)
    add_standard_users(registry)
    broker = BrokerProcess(work / "home")
    registry.start()
    try:
        push_image(built, registry, REPOSITORY, username=PUSHER, password=registry.users[PUSHER])
        broker.start()
        password = registry.users[ALICE]
        broker.register("bench", registry.url, ca.pem, ALICE, password)
        image = f"{registry.host}/{REPOSITORY}:{TAG}"
        (work / "skopeo-home").mkdir()
        env = _isolated_env(work / "skopeo-home")
        ours: list[Run] = []
        theirs: list[Run] = []
        with auth_file(registry.host, ALICE, password) as auth:
            assert auth is not None
            for i in range(runs + 1):  # run 0 warms caches and is not counted
                dest = work / f"ours-{i}"
                run, out = measure(_ours(broker, image, dest))
                digest = json.loads(out)["digest"]
                if digest != built.digest:
                    raise RuntimeError(f"our pull stored {digest}, pushed {built.digest}")
                shutil.rmtree(dest)
                other, _ = measure(_skopeo(registry, auth, image, work / f"skopeo-{i}"), env)
                shutil.rmtree(work / f"skopeo-{i}")
                if i:
                    ours.append(run)
                    theirs.append(other)
        return ours, theirs, built
    finally:
        broker.stop()
        registry.stop()


def report(ours: list[Run], theirs: list[Run], runs: int) -> str:
    """The side-by-side table."""
    wall_o = statistics.median(r.wall for r in ours)
    wall_s = statistics.median(r.wall for r in theirs)
    rss_o = max(r.rss_mib for r in ours)
    rss_s = max(r.rss_mib for r in theirs)
    rows = [
        f"pull of {sum(LAYER_MIB)} MiB ({len(LAYER_MIB)} gzip layers) from a local TLS "
        f"token-auth registry into oci:, median of {runs} (peak RSS: worst run)",
        f"{'':24}{'wall s':>10}{'peak RSS MiB':>15}",
        f"{'pullbroker-sidecar pull':24}{wall_o:>10.2f}{rss_o:>15.1f}",
        f"{'skopeo copy':24}{wall_s:>10.2f}{rss_s:>15.1f}",
        f"{'ratio ours/skopeo':24}{wall_o / wall_s:>9.2f}x{rss_o / rss_s:>14.2f}x",
        f"targets: wall <= {TARGET_RATIO:.1f}x skopeo "
        f"({'met' if wall_o <= TARGET_RATIO * wall_s else 'MISSED'}), "
        f"peak RSS <= {TARGET_RSS_MIB:.0f} MiB ({'met' if rss_o <= TARGET_RSS_MIB else 'MISSED'})",
        "runs (ours/skopeo, s): "
        + ", ".join(f"{o.wall:.2f}/{s.wall:.2f}" for o, s in zip(ours, theirs, strict=True)),
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] = ()) -> int:
    """Run the comparison and print the table; `argv` may hold the number of runs (>= 3)."""
    runs = int(argv[0]) if argv else RUNS
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pull-bench-", dir=CACHE) as tmp:
        ours, theirs, _ = compare(Path(tmp), max(3, runs))
    print(report(ours, theirs, max(3, runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
