"""Channel targets and the service config: one address, several, a DNS name, a gRPC URI; and
the addresses broker.json may hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
        assert {"service": "pullbroker.v1.PullService"} in names
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
        whole_services = {service for service, method in retried if method is None}
        assert whole_services == {"pullbroker.v1.PullService"}


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
