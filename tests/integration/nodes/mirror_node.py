"""A node whose runtime pulls through the mirror: the mirror daemon (metrics on), the hosts
dir `mirror-config` writes, and containerd with its CRI plugin reading that hosts dir.

Shared by the CRI and two-registry mirror tests; each module starts its own node pieces
through these helpers and keeps them for its tests (module-scoped fixtures).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.mirror_world import free_port, mirror_config, mirror_daemon
from tests.harness.runtimes import DOCKERD_HINT, Containerd, direct_hosts_toml, missing
from tests.harness.scrape import Scrape, scrape
from tests.harness.sidecar import SidecarDaemon

BLOB_BYTES = "pullbroker_sidecar_mirror_blob_bytes_total"
REQUESTS = "pullbroker_sidecar_mirror_requests_total"


@dataclass
class MirrorNode:
    """A running `run --mirror` daemon for a node home; its metrics on their own port."""

    daemon: SidecarDaemon
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> Scrape:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def events(self, event: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines for `event`, oldest first."""
        found: list[dict[str, Any]] = []
        for line in self.daemon.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
        return found

    def stop(self) -> None:
        self.daemon.stop()


def start_mirror(home: Path, folder: Path, name: str) -> MirrorNode:
    """The mirror daemon for `home` (sockets and logs in `folder`), metrics on."""
    metrics_port = free_port()
    daemon, port = mirror_daemon(
        home, folder, name, "--metrics-listen", f"127.0.0.1:{metrics_port}"
    )
    return MirrorNode(daemon, port, metrics_port)


def write_hosts_dir(home: Path, folder: Path, mirror: MirrorNode, *hosts: str) -> Path:
    """`mirror-config --runtime containerd` for every registry the broker lets this node
    pull from; fails unless each of `hosts` got its hosts.toml."""
    out = mirror_config("--runtime", "containerd", "--hosts-dir", str(folder),
                        "--mirror", mirror.address, "--home", str(home))  # fmt: skip
    for host in hosts:
        assert (folder / host / "hosts.toml").exists(), out
    return folder


def start_cri_containerd(root: Path, hosts_dir: Path) -> Containerd:
    """containerd with the CRI plugin on and `config_path` = `hosts_dir`, under `root`."""
    absent = missing("containerd", "ctr", "runc")
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed: {DOCKERD_HINT} (make debs installs it)")
    root.mkdir()
    return Containerd(root, cri_hosts_dir=hosts_dir).start()


@contextmanager
def registry_only(hosts_dir: Path, host: str, ca_pem: str) -> Iterator[None]:
    """While inside: `host`'s hosts.toml sends pulls straight to the registry (its CA
    trusted, no mirror), as a node without pullbroker would; the mirror's file comes back
    afterwards. containerd reads hosts.toml on every pull, so no restart is needed."""
    path = hosts_dir / host / "hosts.toml"
    written = path.read_text()
    ca = hosts_dir / host / "registry-ca.crt"
    ca.write_text(ca_pem)
    path.write_text(direct_hosts_toml(host, ca))
    try:
        yield
    finally:
        path.write_text(written)
        ca.unlink()


def bearer_claims(authorization: str) -> dict[str, Any]:
    """The (unverified) claims of a `Bearer <jwt>` header: who the token was issued to."""
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer", f"not a bearer token: {scheme}"
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def stored(home: Path, digest: str) -> bool:
    """The blob is in the node's store (the mirror downloaded and verified it)."""
    return (home / "store" / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()
