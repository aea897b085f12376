"""The shipped deployment runs the node mirror where the runtimes look for it.

The DaemonSet: the sidecar serves `--mirror` on the node's loopback (hostNetwork), the
readiness probe asks that port's `/v2/`, and `mirror-config` writes hosts.toml into the
host's containerd certs.d through a hostPath mounted where `--hosts-dir` points. The systemd
units: the sidecar serves the same mirror, and a oneshot runs mirror-config for crio/docker.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAEMONSET = ROOT / "deploy" / "kubernetes" / "sidecar-daemonset.yaml"
SYSTEMD = ROOT / "deploy" / "systemd"
CERTS_D = "/etc/containerd/certs.d"


def _flag(args: list[str], name: str) -> str | None:
    """The value of `--name=V` or `--name V` in `args`."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(DAEMONSET.read_text()))
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    spec: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str, kind: str = "containers") -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod[kind] if c["name"] == name)
    return found


def _mirror(pod: dict[str, Any]) -> str:
    mirror = _flag(_container(pod, "sidecar")["args"], "--mirror")
    assert mirror is not None
    return mirror


class TestDaemonSet:
    def test_on_the_host_network_resolving_cluster_names(self, pod: dict[str, Any]) -> None:
        assert pod["hostNetwork"] is True
        assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"

    def test_sidecar_serves_the_mirror_on_loopback(self, pod: dict[str, Any]) -> None:
        sidecar = _container(pod, "sidecar")
        assert sidecar["args"][0] == "run"
        host, _, port = _mirror(pod).rpartition(":")
        assert host == "127.0.0.1"
        assert {"name": "mirror", "containerPort": int(port)} in sidecar["ports"]

    def test_readiness_probe_asks_the_mirrors_v2(self, pod: dict[str, Any]) -> None:
        probe = _container(pod, "sidecar")["readinessProbe"]["httpGet"]
        host, _, port = _mirror(pod).rpartition(":")
        assert (probe["host"], probe["port"], probe["path"]) == (host, int(port), "/v2/")
        assert probe.get("scheme", "HTTP") == "HTTP"

    @pytest.mark.parametrize(("kind", "name"), [("initContainers", "mirror-config"),
                                                ("containers", "mirror-config")])  # fmt: skip
    def test_mirror_config_writes_into_the_hosts_certs_d(
        self, pod: dict[str, Any], kind: str, name: str
    ) -> None:
        container = _container(pod, name)
        args = container["args"]
        assert args[0] == "mirror-config"
        assert _flag(args, "--runtime") == "containerd"
        assert _flag(args, "--mirror") == _mirror(pod)
        hosts_dir = _flag(args, "--hosts-dir")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(hosts_dir)])
        assert volume["hostPath"]["path"] == hosts_dir == CERTS_D
        assert not any(m.get("readOnly") for m in container["volumeMounts"]
                       if m["mountPath"] == hosts_dir)  # fmt: skip

    def test_mirror_config_reaches_the_broker_as_the_node(self, pod: dict[str, Any]) -> None:
        sidecar, config = _container(pod, "sidecar"), _container(pod, "mirror-config")
        for flag in ("--broker", "--ca", "--cert", "--key", "--home"):
            assert _flag(config["args"], flag) == _flag(sidecar["args"], flag)

    def test_the_loop_reruns_the_same_command(self, pod: dict[str, Any]) -> None:
        loop = _container(pod, "mirror-config")
        assert loop["command"][0] == "/bin/sh"
        assert 'pullbroker-sidecar "$@"' in loop["command"][2]
        assert loop["args"] == _container(pod, "mirror-config", "initContainers")["args"]


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text().replace("\\\n", " "))
    return parser


class TestSystemd:
    def test_sidecar_unit_serves_the_mirror(self) -> None:
        exec_start = _unit(SYSTEMD / "pullbroker-sidecar.service")["Service"]["ExecStart"]
        args = exec_start.split()
        assert args[1] == "run"
        assert _flag(args, "--mirror") == "127.0.0.1:5005"

    def test_mirror_config_unit_for_crio_and_docker(self) -> None:
        unit = _unit(SYSTEMD / "pullbroker-mirror-config@.service")
        args = unit["Service"]["ExecStart"].split()
        assert args[1] == "mirror-config"
        assert _flag(args, "--runtime") == "%i"
        assert _flag(args, "--mirror") == "127.0.0.1:5005"
        assert unit["Service"]["Type"] == "oneshot"
        assert "pullbroker-sidecar.service" in unit["Unit"]["After"]
        timer = _unit(SYSTEMD / "pullbroker-mirror-config@.timer")
        assert "OnUnitActiveSec" in timer["Timer"]
