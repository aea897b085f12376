"""What the shipped deployment files say holds for the product as built."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_CONFIG = ROOT / "deploy" / "kubernetes" / "credential-provider-config.yaml"

# One real host of each kind. Only the cloud kinds give runtimes a login (the others give
# nodes repository-scoped bearer tokens, which kubelet cannot carry).
WITH_LOGINS = {
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com": "ecr",
    "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn": "ecr",
    "gcr.io": "gcr",
    "eu.gcr.io": "gcr",
    "europe-west4-docker.pkg.dev": "gar",
    "acmeregistry.azurecr.io": "acr",
}
WITHOUT_LOGINS = [
    "registry-1.docker.io",
    "docker.io",
    "ghcr.io",
    "quay.io",
    "harbor.example.com",
    "registry.example.com",
    "registry.example.com:5000",
]


def kubelet_matches(pattern: str, host: str) -> bool:
    """kubelet's matchImages rule: same number of labels, each matched by its glob (a `*`
    never crosses a dot), and the port only when the pattern has one."""
    pattern_host, _, pattern_port = pattern.partition(":")
    name, _, port = host.partition(":")
    labels, globs = name.split("."), pattern_host.split(".")
    return (
        len(labels) == len(globs)
        and all(fnmatch.fnmatchcase(label, glob) for label, glob in zip(labels, globs, strict=True))
        and pattern_port == port
    )


def provider_patterns() -> list[str]:
    config: dict[str, Any] = yaml.safe_load(PROVIDER_CONFIG.read_text())
    (provider,) = config["providers"]
    patterns: list[str] = provider["matchImages"]
    return patterns


class TestCredentialProviderConfig:
    """The kubelet example names only registries the provider can answer for."""

    @pytest.mark.parametrize("pattern", provider_patterns())
    def test_each_pattern_matches_a_kind_with_runtime_logins(self, pattern: str) -> None:
        """Every matchImages entry matches a host of a cloud kind."""
        assert any(kubelet_matches(pattern, host) for host in WITH_LOGINS), pattern

    @pytest.mark.parametrize("host", WITHOUT_LOGINS)
    def test_no_pattern_matches_a_token_only_registry(self, host: str) -> None:
        """No entry sends kubelet to the provider for a registry it never has a login for."""
        assert not any(kubelet_matches(p, host) for p in provider_patterns())

    def test_every_cloud_host_is_covered(self) -> None:
        """Each cloud kind's hosts reach the provider."""
        for host in WITH_LOGINS:
            assert any(kubelet_matches(p, host) for p in provider_patterns()), host


class TestComposeFile:
    """The Compose sidecar can use the Docker socket it mounts."""

    def test_a_socket_mount_comes_with_the_sockets_group(self) -> None:
        """The image runs as a non-root uid (Dockerfile USER), and a standard Docker socket is
        root:docker 0660: a service mounting it joins the socket's group."""
        dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
        user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
        assert user
        assert user[-1] not in ("0", "root")
        compose: dict[str, Any] = yaml.safe_load(
            (ROOT / "deploy" / "compose" / "compose.yaml").read_text()
        )
        mounting = [
            name
            for name, service in compose["services"].items()
            if any("docker.sock" in str(v) for v in service.get("volumes", []))
        ]
        assert mounting == ["sidecar"]
        assert compose["services"]["sidecar"].get("group_add"), "no group for the socket"
