"""The kubelet's path in the mirror benchmark: CRI `ImageService/PullImage` inside containerd.

`ctr images pull` fetches in the ctr client process and streams every byte to containerd over
the content API; the kubelet instead asks containerd's CRI plugin to pull, and containerd
fetches and unpacks itself. These rows pull the same image with CRI, from the same
containerd as the ctr rows (CRI plugin on, `config_path` = a folder of this module's
`HostsSwitch`), into the `k8s.io` namespace where the CRI plugin keeps the kubelet's images:

(a-cri) through the mirror, node store emptied first, no `AuthConfig` (the node holds no
        credential);
(b-cri) straight from the registry: the registry's hosts.toml swapped for one giving only
        its CA, and the credential in `AuthConfig` (username/password), as the kubelet sends
        an imagePullSecret: the peer a platform uses today;
(c-cri) through the mirror again, from the node store.

The CRI plugin reads `config_path` at every pull, so one containerd serves both paths; the
mirror's metrics check each row took the path it names: (a-cri) sent requests to the
mirror and took its layers from upstream, (b-cri) sent none, (c-cri) took no upstream
bytes. Before and after every pull the image goes (CRI RemoveImage) with every content blob
of `k8s.io` (`ctr content rm`), and nothing may be left.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tests.harness.cri import CriCallError, ImageServiceClient, PullAuth
from tests.harness.runtimes import Containerd
from tests.harness.scrape import scrape

K8S_NAMESPACE = "k8s.io"  # the CRI plugin's namespace
MIB = 1024 * 1024
BLOB_BYTES = "pullbroker_sidecar_mirror_blob_bytes_total"
REQUESTS = "pullbroker_sidecar_mirror_requests_total"


class Traffic(NamedTuple):
    """The mirror's counters so far: layer MiB from upstream and from the store, requests."""

    upstream_mib: float
    store_mib: float
    requests: float


def traffic(metrics_port: int) -> Traffic:
    sample = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    return Traffic(
        sample.value(BLOB_BYTES, source="upstream") / MIB,
        sample.value(BLOB_BYTES, source="store") / MIB,
        sample.sum(REQUESTS),
    )


class HostsSwitch:
    """containerd's CRI `config_path`: the registry's hosts.toml is a copy of either the
    mirror's (`mirror-config`) or the direct one (registry CA only), replaced atomically."""

    def __init__(self, config_path: Path, host: str, mirror_dir: Path, direct_dir: Path) -> None:
        self.config_path = config_path
        self.host = host
        self.mirror_dir = mirror_dir
        self.direct_dir = direct_dir
        (config_path / host).mkdir(parents=True, exist_ok=True)
        self.use_mirror()

    def use_mirror(self) -> None:
        self._use(self.mirror_dir)

    def use_direct(self) -> None:
        self._use(self.direct_dir)

    def _use(self, source: Path) -> None:
        target = self.config_path / self.host / "hosts.toml"
        staged = self.config_path.parent / f".{self.config_path.name}-hosts.toml"
        staged.write_text((source / self.host / "hosts.toml").read_text())
        os.replace(staged, target)


@dataclass
class CriRig:
    """What the CRI rows pull with."""

    containerd: Containerd
    cri: ImageServiceClient
    hosts: HostsSwitch
    reference: str
    auth: PullAuth  # the registry credential, as an imagePullSecret gives it
    metrics_port: int
    layer_mib: float
    empty_store: Callable[[], None]  # the mirror's node store


class CriRound(NamedTuple):
    mirror: float
    direct: float
    stored: float
    upstream_mib: float  # the mirror took from upstream in (a-cri)
    store_mib: float  # the mirror served from its store in (c-cri)


@dataclass
class CriRounds:
    """Wall seconds of every measured CRI pull, per mode."""

    rounds: list[CriRound] = field(default_factory=list)

    def median(self, mode: str) -> float:
        return float(statistics.median(getattr(r, mode) for r in self.rounds))


def forget_cri(rig: CriRig) -> None:
    """RemoveImage, then `ctr content rm` of every blob in `k8s.io`; fails if any is left."""
    rig.cri.remove(rig.reference)
    listed = rig.containerd.ctr(["content", "ls", "-q"], K8S_NAMESPACE).stdout.split()
    if listed:
        rig.containerd.ctr(["content", "rm", *listed], K8S_NAMESPACE)
    left = rig.containerd.ctr(["content", "ls", "-q"], K8S_NAMESPACE).stdout.split()
    images = rig.containerd.ctr(["images", "ls", "-q"], K8S_NAMESPACE).stdout.split()
    if left or images or rig.cri.list():
        raise RuntimeError(f"k8s.io still holds {len(left)} blobs, images {images}")


def timed_cri_pull(rig: CriRig, auth: PullAuth | None) -> float:
    """PullImage: wall seconds; fails unless ImageStatus then shows the image pulled."""
    start = time.perf_counter()
    image_ref = rig.cri.pull(rig.reference, auth=auth)
    wall = time.perf_counter() - start
    status = rig.cri.status(rig.reference)
    if status is None or status.id != image_ref:
        raise RuntimeError(f"ImageStatus does not show {image_ref} after PullImage")
    return wall


def check_direct_needs_auth(rig: CriRig) -> None:
    """With the direct hosts.toml, PullImage without `AuthConfig` is refused: in (b-cri) the
    credential in `AuthConfig` is what lets containerd pull."""
    forget_cri(rig)
    rig.hosts.use_direct()
    try:
        rig.cri.pull(rig.reference)
    except CriCallError:
        pass
    else:
        raise RuntimeError("the registry let containerd pull without a credential")
    finally:
        rig.hosts.use_mirror()
    forget_cri(rig)


def cri_round(rig: CriRig) -> CriRound:
    """(a-cri), (b-cri), (c-cri) once each; the mirror's counters checked around each."""
    forget_cri(rig)
    rig.empty_store()
    rig.hosts.use_mirror()
    t0 = traffic(rig.metrics_port)
    a = timed_cri_pull(rig, None)
    t1 = traffic(rig.metrics_port)
    forget_cri(rig)
    rig.hosts.use_direct()
    try:
        b = timed_cri_pull(rig, rig.auth)
    finally:
        rig.hosts.use_mirror()
    t2 = traffic(rig.metrics_port)
    forget_cri(rig)
    c = timed_cri_pull(rig, None)  # store kept from (a-cri)
    t3 = traffic(rig.metrics_port)
    forget_cri(rig)
    if t1.requests <= t0.requests or t1.upstream_mib - t0.upstream_mib < rig.layer_mib:
        raise RuntimeError(f"(a-cri) did not take its layers through the mirror: {t0} -> {t1}")
    if t2 != t1:
        raise RuntimeError(f"(b-cri) went through the mirror: {t1} -> {t2}")
    if t3.upstream_mib != t2.upstream_mib or t3.store_mib - t2.store_mib < rig.layer_mib:
        raise RuntimeError(f"(c-cri) was not served from the store: {t2} -> {t3}")
    return CriRound(a, b, c, t1.upstream_mib - t0.upstream_mib, t3.store_mib - t2.store_mib)


def cri_rows(
    result: CriRounds, ctr: tuple[float, float, float], first: float, stored: float
) -> list[str]:
    """The CRI rows of the table; `ctr` holds the (a), (b), (c) medians, `first` and
    `stored` the (a)/(b) and (c)/(a) targets."""
    a, b, c = (result.median(mode) for mode in ("mirror", "direct", "stored"))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        "the kubelet's path: CRI ImageService/PullImage, same containerd (`k8s.io`):",
        f"{'(a-cri) via mirror, node store empty':38}{a:>10.2f}",
        f"{'(b-cri) straight, AuthConfig creds':38}{b:>10.2f}",
        f"{'(c-cri) via mirror, from node store':38}{c:>10.2f}",
        f"{'ratio (a-cri)/(b-cri)':38}{a / b:>9.2f}x   target <= {first:.2f}x "
        f"({verdict(a <= first * b)})",
        f"{'ratio (c-cri)/(a-cri)':38}{c / a:>9.2f}x   target <= {stored:.2f}x "
        f"({verdict(c <= stored * a)})",
        f"{'CRI / ctr, rows a, b, c':38}{a / ctr[0]:>9.2f}x {b / ctr[1]:.2f}x {c / ctr[2]:.2f}x",
        f"layer MiB the mirror sent per pull: (a-cri) {result.median('upstream_mib'):.1f} from "
        f"upstream, (b-cri) none (no request reached it, checked), (c-cri) "
        f"{result.median('store_mib'):.1f} from the store (0 upstream, checked)",
        "rounds (a-cri/b-cri/c-cri, s): "
        + ", ".join(f"{r.mirror:.2f}/{r.direct:.2f}/{r.stored:.2f}" for r in result.rounds),
    ]
