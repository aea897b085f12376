"""Channel targets and the service config: one address, several, a DNS name, a gRPC URI; and
the addresses broker.json may hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from pullbroker.v1 import audit_pb2, deployment_pb2, policy_pb2, pull_pb2, registry_pb2
from pullbroker_client import broker_target
from pullbroker_client.broker_target import (
    RETRYABLE_METHODS,
    ChannelTarget,
    channel_target,
    service_config,
)
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home


class TestChannelTarget:
    """What gRPC dials, and the one name every replica's certificate is checked against."""

    def test_one_address_is_left_to_grpc(self) -> None:
        """One HOST:PORT goes to gRPC's DNS resolver unchanged (a name with many records is
        balanced by round_robin over all of them)."""
        assert channel_target("127.0.0.1:50051") == ChannelTarget("127.0.0.1:50051")
        headless = "pullbroker-headless.ns.svc:50051"
        assert channel_target(headless) == ChannelTarget(headless)

    def test_several_ip_literals_become_an_ipv4_list(self) -> None:
        """Replicas on IPv4 literals: one `ipv4:` target, TLS name the first host."""
        got = channel_target("127.0.0.1:1001, 127.0.0.2:1002")
        assert got == ChannelTarget("ipv4:127.0.0.1:1001,127.0.0.2:1002", "127.0.0.1:1001")

    def test_several_ipv6_literals_become_an_ipv6_list(self) -> None:
        got = channel_target("[::1]:1001,[::1]:1002")
        assert got == ChannelTarget("ipv6:[::1]:1001,[::1]:1002", "[::1]:1001")

    def test_names_in_a_list_are_resolved_and_keep_their_tls_name(self) -> None:
        """`localhost:A,localhost:B` dials the IPv4 addresses (every host has one) and checks
        certificates against `localhost`, which the development CA names."""
        got = channel_target("localhost:1001,localhost:1002")
        assert got.uri.startswith("ipv4:")
        assert "127.0.0.1:1001" in got.uri
        assert "127.0.0.1:1002" in got.uri
        assert got.authority == "localhost:1001"

    def test_a_host_missing_from_dns_is_left_out(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """One replica gone from DNS does not take the list down: the others are dialled;
        only when no host resolves is it an error naming them (resolver faked in-process)."""

        def resolve(host: str) -> list[str]:
            if host.startswith("gone"):
                raise OSError("Name or service not known")
            return ["127.0.0.1"]

        monkeypatch.setattr(broker_target, "system_resolve", resolve)
        got = channel_target("gone.test:1001,alive.test:1002")
        assert got == ChannelTarget("ipv4:127.0.0.1:1002", "gone.test:1001")
        with pytest.raises(ConfigurationError, match="cannot resolve any broker host"):
            channel_target("gone-a.test:1,gone-b.test:2")

    def test_mixed_families_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="one family"):
            channel_target("127.0.0.1:1001,[::1]:1002")

    @pytest.mark.parametrize(
        "bad", ["a:1,127.0.0.1", "a:1,host:port", "a:1,:2", "a:1,b:70000", " , "]
    )
    def test_malformed_lists_say_the_form(self, bad: str) -> None:
        """Each part of a list must be HOST:PORT (one address alone is gRPC's to judge)."""
        with pytest.raises(ConfigurationError, match="HOST:PORT"):
            channel_target(bad)

    def test_uris_pass_through(self) -> None:
        """dns:/// keeps gRPC's authority (the name); an ipv4: list gets its first address as
        TLS name, since gRPC's default would be the whole list."""
        assert channel_target("dns:///b.ns.svc:50051") == ChannelTarget("dns:///b.ns.svc:50051")
        got = channel_target("ipv4:127.0.0.1:1,127.0.0.1:2")
        assert got == ChannelTarget("ipv4:127.0.0.1:1,127.0.0.1:2", "127.0.0.1:1")

    def test_options_carry_the_service_config_and_authority(self) -> None:
        options = dict(ChannelTarget("ipv4:127.0.0.1:1,127.0.0.1:2", "127.0.0.1:1").options())
        assert json.loads(options["grpc.service_config"]) == service_config()
        assert options["grpc.default_authority"] == "127.0.0.1:1"
        assert options["grpc.enable_retries"] == 1
        assert options["grpc.service_config_disable_resolution"] == 1
        assert "grpc.default_authority" not in dict(ChannelTarget("h:1").options())


class TestServiceConfig:
    """round_robin, and retries on UNAVAILABLE only for calls safe to repeat."""

    def test_round_robin(self) -> None:
        assert service_config()["loadBalancingConfig"] == [{"round_robin": {}}]

    def test_retry_policy(self) -> None:
        (method_config,) = service_config()["methodConfig"]
        policy = method_config["retryPolicy"]
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert policy["maxAttempts"] == 4
        assert (policy["initialBackoff"], policy["maxBackoff"]) == ("0.1s", "1s")

    def test_tokens_and_reads_retry_writes_do_not(self) -> None:
        """Token issues and reads are repeated on another replica; a create, update, delete
        or status report (which a dying replica may have applied) is not."""
        (method_config,) = service_config()["methodConfig"]
        names = method_config["name"]
        assert {"service": "pullbroker.v1.PullService", "method": "IssuePullToken"} in names
        retried = {(n["service"], n.get("method")) for n in names}
        assert retried == set(RETRYABLE_METHODS)
        for write in (
            "CreateRegistry",
            "UpdateRegistry",
            "DeleteRegistry",
            "RollbackRegistry",
            "CreateDeployment",
            "TerminateDeployment",
            "ReportDeploymentStatus",
        ):
            assert all(method != write for _, method in retried), write
        assert all(method is not None for _, method in retried), "name each method"

    def test_every_retried_method_exists(self) -> None:
        """A renamed RPC would silently stop being retried: each name must be a method of the
        service's descriptor (the generated pb2 modules register them all)."""
        assert health_pb2.DESCRIPTOR.services_by_name  # registers grpc.health.v1
        pool = descriptor_pool.Default()
        for service, method in RETRYABLE_METHODS:
            assert method is not None
            assert pool.FindServiceByName(service).FindMethodByName(method) is not None, method

    def test_every_read_of_the_api_is_retried(self) -> None:
        """Reads added later must be listed: every List/Get/Watch/Check/Issue RPC is."""
        retried = set(RETRYABLE_METHODS)
        for module in (audit_pb2, deployment_pb2, policy_pb2, pull_pb2, registry_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    if method.name.startswith(("List", "Get", "Watch", "Check", "Issue")):
                        assert (service.full_name, method.name) in retried, method.full_name


class TestHomeAddresses:
    """broker.json: the single address `serve` writes, or a list an operator writes."""

    def _home(self, tmp_path: Path, data: object) -> Home:
        (tmp_path / "broker.json").write_text(json.dumps(data))
        return Home(tmp_path)

    def test_single_address(self, tmp_path: Path) -> None:
        home = self._home(tmp_path, {"address": "127.0.0.1:5", "pid": 1})
        assert home.read_addresses() == ("127.0.0.1:5",)
        assert home.read_address() == "127.0.0.1:5"

    def test_list_of_addresses(self, tmp_path: Path) -> None:
        home = self._home(tmp_path, {"addresses": ["10.0.0.1:5", "10.0.0.2:5"]})
        assert home.read_addresses() == ("10.0.0.1:5", "10.0.0.2:5")
        assert home.read_address() == "10.0.0.1:5,10.0.0.2:5"

    def test_comma_list_in_address(self, tmp_path: Path) -> None:
        home = self._home(tmp_path, {"address": "a:1, b:2"})
        assert home.read_addresses() == ("a:1", "b:2")

    @pytest.mark.parametrize("data", [{"addresses": []}, {"addresses": [1]}, {"address": ""}, []])
    def test_no_usable_address(self, tmp_path: Path, data: object) -> None:
        with pytest.raises(ConfigurationError, match="has no address"):
            self._home(tmp_path, data).read_addresses()
