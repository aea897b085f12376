"""Helper benchmark: `docker-credential-pullbroker get` on a warm daemon, beside a direct gRPC
lookup from a fresh process.

Both sides answer the same question - the login for one registry - the way a runtime on a
node would pay for it: a new process per lookup. Ours is the credential helper (its
console script when installed, else `python -m`), which asks the running `pullbroker-sidecar
run` over its Unix socket; the other is a fresh Python process that imports the broker
client, opens an mTLS channel with the node certificate and calls IssuePullToken. The
broker (`pullbroker serve`) holds a Basic pass-through record for a local htpasswd
registry, so the helper has a login to hand out. Runs alternate between the two after one
unmeasured warm-up each; the table shows wall-time medians and p90 (target: helper median
<= 100 ms).

    python -m bench helper            (or: python -m bench.helper_bench [RUNS])
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.broker_process import BrokerProcess
from tests.harness.canary import new_canary
from tests.harness.certs import TestCA
from tests.harness.registry import HtpasswdRegistry
from tests.harness.sidecar import DOCKER_HELPER, SidecarDaemon, make_helper_bin, node_env

RUNS = 30
TARGET_MS = 100.0
USER = "bench"
# The direct lookup: what a helper without a daemon would have to do on every call.
_DIRECT = """
import sys
from pullbroker_client.broker import BrokerClient, BrokerTarget
from pullbroker_client.home import Home
with BrokerClient(BrokerTarget.from_home(Home.resolve(sys.argv[1]), "node")) as broker:
    token = broker.issue_pull_token(sys.argv[2])
print(token.username)
"""


@dataclass
class Timings:
    """Wall times (ms) of one side's runs."""

    label: str
    ms: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.ms)

    def p90(self) -> float:
        return sorted(self.ms)[max(0, int(len(self.ms) * 0.9) - 1)]


def _timed(argv: list[str], stdin: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stdout.strip()} {done.stderr.strip()}")
    return elapsed


def compare(workdir: Path, runs: int) -> tuple[Timings, Timings]:
    """Start the world, then time `runs` helper gets and `runs` direct lookups, alternating."""
    ca = TestCA.create(workdir / "ca", "helper bench CA")
    registry = HtpasswdRegistry(workdir / "registry", ca)
    registry.add_user(USER, new_canary(USER))
    registry.start()
    broker = BrokerProcess(workdir / "home")
    daemon: SidecarDaemon | None = None
    socket_dir = Path(tempfile.mkdtemp(prefix="pbb-", dir="/tmp"))  # short: a socket lives here
    try:
        broker.start()
        broker.register("bench", registry.url, ca.pem, USER, registry.users[USER],
                 passthrough=True)  # fmt: skip
        image = f"{registry.host}/team/app:v1"
        daemon = SidecarDaemon(broker.home.root, socket_dir / "s.sock", [image]).start()
        bin_dir = make_helper_bin(socket_dir / "bin")
        env = node_env(bin_dir, daemon.socket)
        helper = [str(bin_dir / DOCKER_HELPER), "get"]
        direct = [sys.executable, "-c", _DIRECT, str(broker.home.root), image]
        ours, theirs = Timings("docker-credential-pullbroker get"), Timings("direct gRPC lookup")
        _timed(helper, registry.host, env)
        _timed(direct, "", env)
        for _ in range(runs):
            ours.ms.append(_timed(helper, registry.host, env))
            theirs.ms.append(_timed(direct, "", env))
        return ours, theirs
    finally:
        if daemon is not None:
            daemon.stop()
        broker.stop()
        registry.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def report(ours: Timings, theirs: Timings, runs: int) -> str:
    """The side-by-side table."""
    lines = [
        f"registry login for one host, fresh process per lookup, {runs} runs each",
        f"{'':36} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}",
    ]
    for side in (ours, theirs):
        lines.append(f"{side.label:36} {side.median():10.1f} {side.p90():8.1f} {min(side.ms):8.1f}")
    verdict = "met" if ours.median() <= TARGET_MS else "MISSED"
    lines.append(
        f"helper median {ours.median():.1f} ms vs target {TARGET_MS:.0f} ms: {verdict}; "
        f"{theirs.median() / ours.median():.1f}x faster than a direct lookup"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    """Run the comparison and print the table; `argv` may hold the number of runs (>= 5)."""
    runs = max(5, int(argv[0])) if argv else RUNS
    with tempfile.TemporaryDirectory(prefix="helper-bench-") as tmp:
        ours, theirs = compare(Path(tmp), runs)
    print(report(ours, theirs, runs), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.pop("PULLBROKER_HOME", None)
    sys.exit(main(sys.argv[1:]))
