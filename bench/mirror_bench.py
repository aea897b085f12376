"""Mirror benchmark: containerd pulling through `run --mirror` beside pulling straight from
the registry with the credential, same registry, same image, same containerd; both as
`ctr images pull` does and as the kubelet does (CRI PullImage).

A ≥256 MiB image of four random 64 MiB layers is built once (cached under .cache/bench)
and pushed to a fresh token-auth registry from the test harness; a real broker holds the
registry credential and the node's mirror (`pullbroker-sidecar run --mirror`) gets its
tokens from it. One real containerd 1.6 (own root, state and socket; CRI plugin on) then
pulls, rounds alternating. With `ctr images pull` (namespace `bench`):

(a) through the mirror, first pull: `--hosts-dir` written by `mirror-config --no-broker
    --host H`; before the round the mirror's node store is emptied, so every blob comes
    from upstream through the mirror;
(b) straight from the registry: `--user u:p --hosts-dir DIR2`, DIR2's hosts.toml only
    giving the registry's CA;
(c) through the mirror again with the node store kept: every blob is served from the store.

Two more rows split (c)'s time: (a') and (c') are the same two mirror pulls with `ctr
content fetch` (no unpack into snapshots), and (d) is curl reading the layers from the
mirror's store into /dev/null, one after another: the mirror's own share. Every round also
checks, on the mirror's metrics, that (a) took its layers from upstream and (c) none.

`ctr` fetches in its own process and writes every byte to containerd over the content API;
the kubelet has containerd's CRI plugin pull. So every round then makes the same three pulls
with CRI `ImageService/PullImage` (namespace `k8s.io`; bench/mirror_cri.py): (a-cri) via
the mirror with the store emptied and no `AuthConfig`, (b-cri) straight from the registry
with the credential in `AuthConfig` (username/password, as the kubelet sends an
imagePullSecret), (c-cri) via the mirror from the store. The CRI plugin reads the
registry's hosts.toml in its `config_path` at every pull; it is swapped between the mirror's
and the direct one between rows, and the mirror's metrics check that (a-cri) went through
the mirror, (b-cri) did not, and (c-cri) took nothing from upstream. Once, before the
rounds, a direct PullImage without `AuthConfig` must be refused.

Before every pull containerd forgets the image and all its content (`ctr images rm` or CRI
RemoveImage, then `ctr content rm` of everything listed in the namespace). Reported: wall
medians, (a)/(b), (c)/(a), (a-cri)/(b-cri), (c-cri)/(a-cri), and the mirror daemon's peak
RSS (VmHWM of its process, read at the end of the run).

    python -m bench mirror            (or: python -m bench.mirror_bench [ROUNDS])
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.mirror_cri import (
    CriRig,
    CriRounds,
    HostsSwitch,
    check_direct_needs_auth,
    cri_round,
    cri_rows,
)
from bench.pull_bench import CACHE, MIB, cached_layout_image
from tests.harness.broker_process import BrokerProcess
from tests.harness.certs import TestCA
from tests.harness.cri import ImageServiceClient, PullAuth
from tests.harness.images import BuiltImage, push_image
from tests.harness.mirror_world import free_port, mirror_config, mirror_daemon
from tests.harness.registry import TokenAuthRegistry
from tests.harness.runtimes import (
    Containerd,
    direct_hosts_toml,
    missing,
    remove_tree,
    short_dir,
)
from tests.harness.scrape import scrape
from tests.harness.sidecar import SidecarDaemon
from tests.harness.standard import ALICE, PUSHER, add_standard_users

LAYER_MIB = (64, 64, 64, 64)  # 256 MiB in four layers
TAG = "big"
REPOSITORY = "team/mirror-bench"
NAMESPACE = "bench"
ROUNDS = 3
TARGET_FIRST = 1.15  # (a)/(b)
TARGET_STORED = 0.3  # (c)/(a)
TARGET_RSS_MIB = 150.0


class CtrRound(NamedTuple):
    """One round of the ctr rows: wall seconds, and the mirror's layer MiB."""

    mirror: float
    direct: float
    stored: float
    fetch_mirror: float
    fetch_stored: float
    curl_stored: float
    upstream_mib: float  # per (a) pull
    store_mib: float  # per (c) pull


@dataclass
class Rounds:
    """Wall seconds of every measured pull, per mode."""

    mirror: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    stored: list[float] = field(default_factory=list)
    fetch_mirror: list[float] = field(default_factory=list)
    fetch_stored: list[float] = field(default_factory=list)
    curl_stored: list[float] = field(default_factory=list)
    upstream_mib: list[float] = field(default_factory=list)  # per (a) pull
    store_mib: list[float] = field(default_factory=list)  # per (c) pull

    def add(self, one: CtrRound) -> None:
        for name, value in one._asdict().items():
            getattr(self, name).append(value)


@dataclass
class Rig:
    """What the ctr rows pull with."""

    containerd: Containerd
    reference: str
    via_mirror: list[str]  # ctr args
    direct: list[str]
    digest: str
    home: Path  # the mirror's node home
    port: int  # the mirror's
    metrics_port: int
    registry_host: str
    layers: list[str]


def cached_image() -> BuiltImage:
    """The benchmark image, built on first use (fixed seed: same bytes every time)."""
    return cached_layout_image("mirror-image", LAYER_MIB, TAG, seed=20241106)


def direct_hosts_dir(folder: Path, registry: TokenAuthRegistry) -> Path:
    """A hosts dir that only tells containerd the registry's CA (no mirror)."""
    ca = folder / "ca.crt"
    (folder / registry.host).mkdir(parents=True)
    ca.write_text(registry.ca.pem)
    (folder / registry.host / "hosts.toml").write_text(direct_hosts_toml(registry.host, ca))
    return folder


def forget(containerd: Containerd, reference: str) -> None:
    """Remove the image and every content blob from containerd."""
    containerd.ctr(["images", "rm", "--sync", reference], namespace=NAMESPACE)
    listed = containerd.ctr(["content", "ls", "-q"], namespace=NAMESPACE).stdout.split()
    if listed:
        containerd.ctr(["content", "rm", *listed], namespace=NAMESPACE)
    left = containerd.ctr(["content", "ls", "-q"], namespace=NAMESPACE).stdout.split()
    if left:
        raise RuntimeError(f"containerd still holds {len(left)} blobs after content rm")


def timed_pull(
    containerd: Containerd, args: list[str], digest: str, command: str = "images pull"
) -> float:
    """`ctr COMMAND ARGS`: wall seconds; fails unless containerd then lists `digest` (when
    one is given: `content fetch` makes no image)."""
    argv = ["ctr", "--address", str(containerd.socket), "--namespace", NAMESPACE]
    argv += [*command.split(), *args]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ctr {command} failed: {done.stderr.strip()[-400:]}")
    listed = containerd.ctr(["images", "ls"], namespace=NAMESPACE).stdout
    if digest and digest not in listed:
        raise RuntimeError(f"containerd does not list {digest} after the pull")
    return wall


def empty_store(home: Path) -> None:
    """Remove every blob (and its verified marker) from the mirror's node store, keeping
    the store's folders: the daemon keeps running on them."""
    store = home / "store"
    for path in sorted(store.rglob("*")) if store.exists() else []:
        if path.is_file() and path.parent != store:
            path.unlink()


def layer_digests(image: BuiltImage) -> list[str]:
    """The layer digests of the (single-platform) image in its cached layout."""
    algorithm, hex_digest = image.digest.split(":", 1)
    manifest = json.loads((image.layout_dir / "blobs" / algorithm / hex_digest).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


def timed_curl(port: int, image: str, host: str, digests: list[str]) -> float:
    """Every layer from the mirror into /dev/null with curl, one after another: the mirror's
    own serving speed, without containerd's ingest."""
    argv = ["curl", "-sSf", "--noproxy", "*"]
    for digest in digests:
        argv += ["-o", "/dev/null", f"http://127.0.0.1:{port}/v2/{image}/blobs/{digest}?ns={host}"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"curl from the mirror failed: {done.stderr.strip()[-400:]}")
    return wall


def blob_mib(metrics_port: int) -> tuple[float, float]:
    """Layer bytes the mirror served so far, (from upstream, from the store), MiB."""
    sample = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    name = "pullbroker_sidecar_mirror_blob_bytes_total"
    return sample.value(name, source="upstream") / MIB, sample.value(name, source="store") / MIB


def peak_rss_mib(daemon: SidecarDaemon) -> float:
    """VmHWM of the daemon's process, MiB."""
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def ctr_round(rig: Rig) -> CtrRound:
    """(a), (b), (c), (d), then (c') and (a'), once each."""
    forget(rig.containerd, rig.reference)
    empty_store(rig.home)
    up0, _ = blob_mib(rig.metrics_port)
    a = timed_pull(rig.containerd, rig.via_mirror, rig.digest)
    up1, st1 = blob_mib(rig.metrics_port)
    forget(rig.containerd, rig.reference)
    b = timed_pull(rig.containerd, rig.direct, rig.digest)
    forget(rig.containerd, rig.reference)
    c = timed_pull(rig.containerd, rig.via_mirror, rig.digest)  # store kept from (a)
    up2, st2 = blob_mib(rig.metrics_port)
    d = timed_curl(rig.port, REPOSITORY, rig.registry_host, rig.layers)
    if up2 != up1:
        raise RuntimeError(f"(c) fetched {up2 - up1:.1f} MiB upstream; store expected")
    # The same two mirror pulls without containerd's unpack (`ctr content fetch`).
    forget(rig.containerd, rig.reference)
    fc = timed_pull(rig.containerd, rig.via_mirror, "", "content fetch")
    forget(rig.containerd, rig.reference)
    empty_store(rig.home)
    fa = timed_pull(rig.containerd, rig.via_mirror, "", "content fetch")
    forget(rig.containerd, rig.reference)
    return CtrRound(a, b, c, fa, fc, d, up1 - up0, st2 - st1)


def run_rounds(rig: Rig, cri_rig: CriRig, rounds: int) -> tuple[Rounds, CriRounds]:
    """Round 0 warms caches and is not counted; every round makes the ctr rows, then the
    CRI rows."""
    check_direct_needs_auth(cri_rig)
    result, cri_result = Rounds(), CriRounds()
    for i in range(rounds + 1):
        one = ctr_round(rig)
        cri = cri_round(cri_rig)
        print(f"  round {i}{' (warm-up)' if not i else ''}: mirror {one.mirror:.2f} s, "
              f"direct {one.direct:.2f} s, from store {one.stored:.2f} s; fetch only: mirror "
              f"{one.fetch_mirror:.2f} s, from store {one.fetch_stored:.2f} s; curl from store "
              f"{one.curl_stored:.2f} s; CRI: mirror {cri.mirror:.2f} s, direct "
              f"{cri.direct:.2f} s, from store {cri.stored:.2f} s", flush=True)  # fmt: skip
        if i:
            result.add(one)
            cri_result.rounds.append(cri)
    return result, cri_result


def compare(work: Path, node: Path, rounds: int) -> tuple[Rounds, CriRounds, float]:
    """Start registry, broker, mirror and containerd; push; alternate measured pulls."""
    absent = missing("containerd", "ctr")
    if absent:
        raise RuntimeError(f"{', '.join(absent)} not installed (make debs installs them)")
    built = cached_image()
    ca = TestCA.create(work / "ca", "mirror bench CA")
    registry = TokenAuthRegistry(work / "registry", ca)
    add_standard_users(registry)
    broker = BrokerProcess(work / "home")
    containerd = Containerd(node / "ctrd", cri_hosts_dir=node / "cri.d")
    (node / "ctrd").mkdir()
    daemon: SidecarDaemon | None = None
    registry.start()
    try:
        push_image(built, registry, REPOSITORY, username=PUSHER, password=registry.users[PUSHER])
        broker.start()
        password = registry.users[ALICE]
        broker.register("bench", registry.url, ca.pem, ALICE, password)
        home = broker.home.root
        metrics_port = free_port()
        daemon, port = mirror_daemon(
            home, node, "mirror", "--metrics-listen", f"127.0.0.1:{metrics_port}"
        )
        mirror_hosts = node / "mirror.d"
        mirror_config("--runtime", "containerd", "--hosts-dir", str(mirror_hosts), "--mirror",
                      f"127.0.0.1:{port}", "--no-broker", "--host", registry.host,
                      "--home", str(home))  # fmt: skip
        direct_hosts = direct_hosts_dir(node / "direct.d", registry)
        hosts = HostsSwitch(node / "cri.d", registry.host, mirror_hosts, direct_hosts)
        containerd.start()
        reference = f"{registry.host}/{REPOSITORY}:{TAG}"
        rig = Rig(containerd, reference, ["--hosts-dir", str(mirror_hosts), reference],
                  ["--user", f"{ALICE}:{password}", "--hosts-dir", str(direct_hosts), reference],
                  built.digest, home, port, metrics_port, registry.host,
                  layer_digests(built))  # fmt: skip
        with ImageServiceClient(containerd.socket, timeout=600) as cri:
            cri_rig = CriRig(containerd, cri, hosts, reference, PullAuth(ALICE, password),
                             metrics_port, float(sum(LAYER_MIB)),
                             lambda: empty_store(home))  # fmt: skip
            result, cri_result = run_rounds(rig, cri_rig, rounds)
        return result, cri_result, peak_rss_mib(daemon)
    finally:
        containerd.stop()
        if daemon is not None:
            daemon.stop()
        broker.stop()
        registry.stop()


def report(result: Rounds, cri: CriRounds, rss: float, rounds: int) -> str:
    """The side-by-side table."""
    a = statistics.median(result.mirror)
    b = statistics.median(result.direct)
    c = statistics.median(result.stored)
    fa = statistics.median(result.fetch_mirror)
    fc = statistics.median(result.fetch_stored)
    d = statistics.median(result.curl_stored)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        f"containerd 1.6 pulls of {sum(LAYER_MIB)} MiB ({len(LAYER_MIB)} layers) "
        f"from a local TLS token-auth registry, median of {rounds} rounds",
        f"{'':38}{'wall s':>10}",
        "`ctr images pull` (fetched in the ctr process, written over the content API):",
        f"{'(a) via mirror, node store empty':38}{a:>10.2f}",
        f"{'(b) straight, --user (credential)':38}{b:>10.2f}",
        f"{'(c) via mirror, from node store':38}{c:>10.2f}",
        f"{'ratio (a)/(b)':38}{a / b:>9.2f}x   target <= {TARGET_FIRST:.2f}x "
        f"({verdict(a <= TARGET_FIRST * b)})",
        f"{'ratio (c)/(a)':38}{c / a:>9.2f}x   target <= {TARGET_STORED:.2f}x "
        f"({verdict(c <= TARGET_STORED * a)})",
        f"{'mirror daemon peak RSS (VmHWM) MiB':38}{rss:>10.1f}    target <= "
        f"{TARGET_RSS_MIB:.0f} MiB ({verdict(rss <= TARGET_RSS_MIB)})",
        f"layer MiB the mirror sent per pull: (a) {statistics.median(result.upstream_mib):.1f} "
        f"from upstream, (c) {statistics.median(result.store_mib):.1f} from the store "
        "(0 upstream, checked)",
        "without containerd's unpack (`ctr content fetch`, same hosts dir):",
        "(a') via mirror, node store empty".ljust(38) + f"{fa:>10.2f}",
        "(c') via mirror, from node store".ljust(38) + f"{fc:>10.2f}",
        "ratio (c')/(a')".ljust(38) + f"{fc / fa:>9.2f}x",
        f"{'(d) mirror store -> curl -> /dev/null':38}{d:>10.2f}    "
        f"({sum(LAYER_MIB) / d:.0f} MiB/s; (d)/(a) {d / a:.2f}x)",
        "rounds (a/b/c/a'/c'/d, s): "
        + ", ".join(
            "/".join(f"{t:.2f}" for t in times)
            for times in zip(
                result.mirror,
                result.direct,
                result.stored,
                result.fetch_mirror,
                result.fetch_stored,
                result.curl_stored,
                strict=True,
            )
        ),
        *cri_rows(cri, (a, b, c), TARGET_FIRST, TARGET_STORED),
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] = ()) -> int:
    """Run the comparison and print the table; `argv` may hold the number of rounds (>= 3)."""
    rounds = max(3, int(argv[0]) if argv else ROUNDS)
    CACHE.mkdir(parents=True, exist_ok=True)
    node = short_dir("mbench")  # containerd's socket path must stay short
    try:
        with tempfile.TemporaryDirectory(prefix="mirror-bench-", dir=CACHE) as tmp:
            result, cri, rss = compare(Path(tmp), node, rounds)
    finally:
        remove_tree(node)
    print(report(result, cri, rss, rounds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
