"""mTLS identity and role checks, request ids, and health for any authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pullbroker.v1 import registry_pb2, registry_pb2_grpc
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.tls import TlsFiles, channel_credentials
from pullbroker_service.bootstrap.devca import CertificateAuthority, LeafSpec

from tests.harness.certs import TestCA
from tests.integration.conftest import RunningBroker

pytestmark = pytest.mark.integration

STRANGER = "spiffe://pullbroker.local/stranger"


def health_check(broker: RunningBroker, tls: TlsFiles) -> object:
    with grpc.secure_channel(broker.address, channel_credentials(tls)) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )


class TestRoles:
    def test_node_cannot_manage_registries(self, broker: RunningBroker) -> None:
        """A node certificate calling RegistryService is PERMISSION_DENIED, naming the role."""
        with broker.client("node") as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in caught.value.message

    def test_admin_cannot_pull(self, broker: RunningBroker) -> None:
        """An admin certificate calling PullService is PERMISSION_DENIED."""
        with broker.client("admin") as client, pytest.raises(BrokerCallError) as caught:
            client.issue_pull_token("127.0.0.1:5000/team/app:v1")
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "node" in caught.value.message

    def test_identity_not_in_policy_is_denied_everywhere(self, broker: RunningBroker) -> None:
        """A valid certificate whose identity no rule names is denied both services."""
        tls = broker.issue_client_cert("stranger", uri=STRANGER, cn="stranger")
        with broker.client(tls=tls) as client:
            for call in (client.list_registries, lambda: client.issue_pull_token("a.io/b/c:1")):
                with pytest.raises(BrokerCallError) as caught:
                    call()
                assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
                assert STRANGER in caught.value.message

    def test_common_name_identity_matches_cn_rule(
        self, make_broker: Callable[..., RunningBroker]
    ) -> None:
        """A certificate without a SPIFFE ID is "CN=<cn>", and a CN rule grants it a role."""
        policy = 'rules:\n  - identity: "CN=ops-robot"\n    roles: [admin]\n'
        broker = make_broker(policy=policy)
        tls = broker.issue_client_cert("robot", cn="ops-robot")
        with broker.client(tls=tls) as client:
            assert list(client.list_registries().registries) == []
        with broker.client("admin") as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED


class TestTransport:
    def test_certificate_from_another_ca_is_refused(self, broker: RunningBroker) -> None:
        """A client certificate signed by a foreign CA never reaches a servicer (UNAVAILABLE)."""
        other = CertificateAuthority.generate("foreign CA")
        cert_pem, key_pem = other.issue(
            LeafSpec("admin", uris=("spiffe://pullbroker.local/admin",), client=True)
        )
        folder = broker.home.root.parent / "foreign"
        folder.mkdir()
        (folder / "admin.crt").write_bytes(cert_pem)
        (folder / "admin.key").write_bytes(key_pem)
        tls = TlsFiles(broker.home.ca_cert, folder / "admin.crt", folder / "admin.key")
        with broker.client(tls=tls) as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE

    def test_no_client_certificate_is_refused(self, broker: RunningBroker) -> None:
        """A TLS client without a certificate cannot complete a call."""
        creds = grpc.ssl_channel_credentials(root_certificates=broker.home.ca_cert.read_bytes())
        with grpc.secure_channel(broker.address, creds) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListRegistries(registry_pb2.ListRegistriesRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    def test_plaintext_client_is_refused(self, broker: RunningBroker) -> None:
        """A plaintext client cannot call the mTLS port."""
        with grpc.insecure_channel(broker.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListRegistries(registry_pb2.ListRegistriesRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    def test_health_serves_node_and_admin(self, broker: RunningBroker) -> None:
        """grpc.health.v1 answers SERVING to any authenticated caller."""
        for role in ("admin", "node"):
            response = health_check(broker, TlsFiles.from_home(broker.home, role))
            assert response.status == health_pb2.HealthCheckResponse.SERVING  # type: ignore[attr-defined]

    def test_health_serves_identity_without_roles(self, broker: RunningBroker) -> None:
        """An authenticated identity with no roles may still check health."""
        tls = broker.issue_client_cert("nobody", uri=STRANGER, cn="nobody")
        response = health_check(broker, tls)
        assert response.status == health_pb2.HealthCheckResponse.SERVING  # type: ignore[attr-defined]


class TestInsecureDevPort:
    def test_insecure_port_callers_are_denied_by_default(
        self, make_broker: Callable[..., RunningBroker]
    ) -> None:
        """On the dev port callers are insecure:dev-port: health works, the services are denied."""
        broker = make_broker(insecure_dev_port=0)
        assert broker.insecure_address
        with grpc.insecure_channel(broker.insecure_address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListRegistries(registry_pb2.ListRegistriesRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "insecure:dev-port" in (caught.value.details() or "")


class TestRequestIds:
    def test_request_id_is_echoed(self, broker: RunningBroker) -> None:
        """A caller's x-request-id comes back in trailing metadata."""
        with grpc.secure_channel(
            broker.address, channel_credentials(TlsFiles.from_home(broker.home, "admin"))
        ) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            _, call = stub.ListRegistries.with_call(
                registry_pb2.ListRegistriesRequest(),
                metadata=(("x-request-id", "req-123"),),
                timeout=10,
            )
        assert ("x-request-id", "req-123") in list(call.trailing_metadata())

    def test_request_id_is_generated_and_logged(self, broker: RunningBroker) -> None:
        """Without x-request-id the broker makes one, returns it, and logs the call under it."""
        tls = TlsFiles.from_home(broker.home, "node")
        with grpc.secure_channel(broker.address, channel_credentials(tls)) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListRegistries(registry_pb2.ListRegistriesRequest(), timeout=10)
        metadata: Any = caught.value.trailing_metadata()
        trailing = dict(metadata or ())
        request_id = trailing.get("x-request-id")
        assert request_id
        log = broker.home.broker_log.read_text()
        lines = [line for line in log.splitlines() if request_id in line]
        assert any('"rpc_failed"' in line and "PERMISSION_DENIED" in line for line in lines)


def present(
    broker: RunningBroker, name: str, cn: str, sans: Sequence[x509.GeneralName]
) -> TlsFiles:
    """A client certificate signed by the broker's own CA with exactly `sans` and CN `cn`."""
    folder = broker.home.root.parent / "extra-certs"
    ca = TestCA.adopt(folder, broker.home.ca_cert, broker.home.ca_key)
    issued = ca.issue(name, sans=sans, cn=cn, server=False)
    return TlsFiles(ca=broker.home.ca_cert, cert=issued.cert_path, key=issued.key_path)


ADMIN_ID = "spiffe://pullbroker.local/admin"


class TestIdentityFromUriSansOnly:
    """Identity is the one spiffe:// URI SAN, else the CN: no other SAN type can claim one."""

    @pytest.mark.parametrize(
        "forged",
        [x509.DNSName(ADMIN_ID), x509.RFC822Name(ADMIN_ID)],
        ids=["dns-san", "email-san"],
    )
    def test_non_uri_san_cannot_impersonate_admin(
        self, broker: RunningBroker, forged: x509.GeneralName
    ) -> None:
        """A DNS or e-mail SAN spelled as the admin's SPIFFE ID is ignored: the caller is its CN."""
        tls = present(broker, "forger", "node-x", [forged])
        with broker.client(tls=tls) as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "CN=node-x" in caught.value.message
        assert ADMIN_ID not in caught.value.message

    def test_uri_san_beside_forged_dns_san_is_the_identity(self, broker: RunningBroker) -> None:
        """With a real URI SAN and a forged DNS one, the URI SAN alone decides (a node here)."""
        sans = [x509.DNSName(ADMIN_ID), x509.UniformResourceIdentifier(STRANGER)]
        tls = present(broker, "mixed", "node-x", sans)
        with broker.client(tls=tls) as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert STRANGER in caught.value.message

    def test_two_spiffe_uri_sans_are_refused(self, broker: RunningBroker) -> None:
        """Two spiffe:// URI SANs (any case) are not an SVID: UNAUTHENTICATED, not the CN."""
        sans = [
            x509.UniformResourceIdentifier(ADMIN_ID),
            x509.UniformResourceIdentifier("SPIFFE://pullbroker.local/node/a"),
        ]
        tls = present(broker, "twoids", "admin", sans)
        with broker.client(tls=tls) as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert "several SPIFFE IDs" in caught.value.message

    @pytest.mark.parametrize(
        ("cn", "sans"),
        [
            ("node-x", [x509.UniformResourceIdentifier(ADMIN_ID + "\x00.node/x")]),
            ("admin\x00x", []),
        ],
        ids=["uri-san", "cn"],
    )
    def test_nul_prefixed_names_are_refused(
        self, broker: RunningBroker, cn: str, sans: list[x509.GeneralName]
    ) -> None:
        """Names gRPC would cut at a NUL (to the admin's) are refused, never read cut."""
        tls = present(broker, "nul", cn, sans or [x509.DNSName("node.example")])
        with broker.client(tls=tls) as client, pytest.raises(BrokerCallError) as caught:
            client.list_registries()
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED

    def test_real_admin_uri_san_still_admin(self, broker: RunningBroker) -> None:
        """The admin's own URI SAN in a crafted certificate of the same CA is the admin."""
        tls = present(broker, "admin2", "whatever", [x509.UniformResourceIdentifier(ADMIN_ID)])
        with broker.client(tls=tls) as client:
            assert list(client.list_registries().registries) == []
