"""`mirror-config` renders each runtime's mirror configuration and writes it atomically."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pullbroker_sidecar.cli import main
from pullbroker_sidecar.integrations.mirror_config import (
    containerd_hosts_toml,
    docker_daemon_json,
    registries_conf,
)


class TestRendering:
    """The files parse as the runtimes read them."""

    def test_containerd(self) -> None:
        """server is the registry (Docker Hub's API host); the mirror pulls and resolves."""
        doc = tomllib.loads(containerd_hosts_toml("docker.io", "127.0.0.1:5005"))
        assert doc["server"] == "https://registry-1.docker.io"
        assert doc["host"]["http://127.0.0.1:5005"]["capabilities"] == ["pull", "resolve"]

    def test_registries_conf(self) -> None:
        """One [[registry]] per host; a port is written host_port in the mirror prefix."""
        doc = tomllib.loads(registries_conf(["ghcr.io", "reg.local:5000"], "127.0.0.1:5005"))
        mirrors = {r["location"]: r["mirror"][0] for r in doc["registry"]}
        assert mirrors["ghcr.io"] == {"location": "127.0.0.1:5005/ghcr.io", "insecure": True}
        assert mirrors["reg.local:5000"]["location"] == "127.0.0.1:5005/reg.local_5000"

    def test_docker(self) -> None:
        """dockerd's registry-mirrors entry."""
        assert json.loads(docker_daemon_json("127.0.0.1:5005")) == {
            "registry-mirrors": ["http://127.0.0.1:5005"]
        }


class TestCommand:
    """The command writes one hosts.toml per host and leaves other hosts alone."""

    def test_hosts_dir(self, tmp_path: Path) -> None:
        """--host and --image hosts get a hosts.toml; an unrelated host's file is untouched."""
        (tmp_path / "other.io").mkdir()
        (tmp_path / "other.io" / "hosts.toml").write_text("mine")
        status = main(["mirror-config", "--no-broker", "--runtime", "containerd",
                       "--hosts-dir", str(tmp_path),
                       "--host", "ghcr.io", "--image", "quay.io/org/app:1"])  # fmt: skip
        assert status == 0
        assert (tmp_path / "other.io" / "hosts.toml").read_text() == "mine"
        for host in ("ghcr.io", "quay.io"):
            assert (
                tomllib.loads((tmp_path / host / "hosts.toml").read_text())["server"]
                == f"https://{host}"
            )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ghcr.io", "other.io", "quay.io"]
