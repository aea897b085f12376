"""grpcurl, a client we did not write, sees the API through reflection and only over mTLS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pullbroker_client.tls import TlsFiles
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec

from tests.integration.conftest import RunningBroker

pytestmark = pytest.mark.integration

GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "pullbroker.v1.AuditService",
    "pullbroker.v1.DeploymentReportingService",
    "pullbroker.v1.DeploymentService",
    "pullbroker.v1.PolicyService",
    "pullbroker.v1.PullService",
    "pullbroker.v1.RegistryService",
}


def grpcurl(
    broker: RunningBroker, tls: TlsFiles | None, *verb: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl against the broker; trust is always the explicit CA file, never the env."""
    command = [GRPCURL, "-cacert", str(broker.home.ca_cert), "-connect-timeout", "2"]
    command += ["-max-time", "10"]
    if tls is not None:
        command += ["-cert", str(tls.cert), "-key", str(tls.key)]
    if data is not None:
        command += ["-d", data]
    return subprocess.run(
        [*command, broker.address, *verb],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(autouse=True)
def _need_grpcurl() -> None:
    if not Path(GRPCURL).exists():
        pytest.fail(f"grpcurl is not installed at {GRPCURL}: run `make venv`", pytrace=False)


class TestReflection:
    def test_lists_services_with_admin_cert(self, broker: RunningBroker) -> None:
        """`grpcurl list` over mTLS names the broker's, health and reflection services."""
        done = grpcurl(broker, TlsFiles.from_home(broker.home, "admin"), "list")
        assert done.returncode == 0, done.stderr
        assert set(done.stdout.split()) == SERVICES

    def test_describe_shows_registry_methods(self, broker: RunningBroker) -> None:
        """`grpcurl describe` shows RegistryService's methods from reflection."""
        done = grpcurl(
            broker,
            TlsFiles.from_home(broker.home, "node"),
            "describe",
            "pullbroker.v1.RegistryService",
        )
        assert done.returncode == 0, done.stderr
        for method in ("CreateRegistry", "ListRegistries", "UpdateRegistry", "TestConnection"):
            assert method in done.stdout


class TestCalls:
    def test_admin_lists_registries(self, broker: RunningBroker) -> None:
        """grpcurl calls ListRegistries with the admin cert and gets a JSON response."""
        tls = TlsFiles.from_home(broker.home, "admin")
        done = grpcurl(broker, tls, "pullbroker.v1.RegistryService/ListRegistries", data="{}")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {}

    def test_health_check(self, broker: RunningBroker) -> None:
        """grpcurl's health Check answers SERVING."""
        tls = TlsFiles.from_home(broker.home, "node")
        done = grpcurl(broker, tls, "grpc.health.v1.Health/Check")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"status": "SERVING"}

    def test_node_cert_is_denied_registry_service(self, broker: RunningBroker) -> None:
        """With the node cert, ListRegistries fails with PermissionDenied."""
        tls = TlsFiles.from_home(broker.home, "node")
        done = grpcurl(broker, tls, "pullbroker.v1.RegistryService/ListRegistries", data="{}")
        assert done.returncode != 0
        assert "PermissionDenied" in done.stderr


class TestRefused:
    def test_without_client_certificate(self, broker: RunningBroker) -> None:
        """Without a client certificate grpcurl cannot list or call anything."""
        listed = grpcurl(broker, None, "list")
        called = grpcurl(broker, None, "grpc.health.v1.Health/Check")
        assert listed.returncode != 0
        assert called.returncode != 0
        assert "SERVING" not in called.stdout
        assert "pullbroker.v1" not in listed.stdout

    def test_certificate_from_another_ca(self, broker: RunningBroker, tmp_path: Path) -> None:
        """An admin-named certificate from a foreign CA is refused at the handshake."""
        foreign = CertificateAuthority.generate("foreign CA")
        cert_pem, key_pem = foreign.issue(
            LeafSpec("admin", uris=("spiffe://pullbroker.local/admin",), client=True)
        )
        (tmp_path / "f.crt").write_bytes(cert_pem)
        (tmp_path / "f.key").write_bytes(key_pem)
        tls = TlsFiles(broker.home.ca_cert, tmp_path / "f.crt", tmp_path / "f.key")
        done = grpcurl(broker, tls, "pullbroker.v1.RegistryService/ListRegistries", data="{}")
        assert done.returncode != 0
        assert "registries" not in done.stdout
        assert done.stdout.strip() == ""
