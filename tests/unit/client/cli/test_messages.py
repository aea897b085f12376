"""What the command lines print when something is wrong: one line, in the CLI's own words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import duration_pb2
from pullbroker.v1 import registry_pb2
from pullbroker_client.cli import output
from pullbroker_client.cli_flags import as_flags
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home


class TestApiFieldsBecomeFlags:
    """The broker's API field names are rewritten to the flags that set them."""

    @pytest.mark.parametrize(
        ("said", "shown"),
        [
            ("registry.display_name is required, e.g. team-ghcr", "--name is required"),
            ("display_name 'X' is invalid", "--name 'X' is invalid"),
            ("registry_ca_pem holds no certificate", "--registry-ca holds no certificate"),
            ("allow_basic_passthrough is off for it", "--allow-basic-passthrough is off"),
            ("credential.azure.client_id must be a GUID", "--client-id must be a GUID"),
            ("credential key_json has no token_uri", "--service-account-key has no token_uri"),
            ("several registries serve host h (a, b): name one in the request", "with --registry"),
            ("rotate without the test (skip_test)", "without the test (--no-test)"),
        ],
    )
    def test_rewritten(self, said: str, shown: str) -> None:
        """Each API spelling becomes its flag."""
        assert shown in as_flags(said)

    def test_other_words_stay(self) -> None:
        """Words that merely contain a field name are left alone."""
        assert as_flags("the client_id_x and my_display_name stay") == (
            "the client_id_x and my_display_name stay"
        )


class TestRegistryTestOutput:
    """A failed `registry test` is one line that says why."""

    def test_one_line_with_the_reason(self) -> None:
        """Outcome, auth, latency and the registry's reason on one line, flags named."""
        result = registry_pb2.TestConnectionResponse(
            outcome=registry_pb2.CONNECTION_OUTCOME_TLS_FAILURE,
            message="TLS to h failed: check the registry CA (registry_ca_pem)\nsecond line",
            latency=duration_pb2.Duration(nanos=12_000_000),
            auth_scheme="bearer",
        )
        text = output.test_result_text("team", result)
        assert "\n" not in text
        assert text.startswith("team: ")
        assert "(--registry-ca) second line" in text


class TestMissingBrokerAddress:
    """Advice for a home without broker.json never makes a second, empty home."""

    def test_points_at_the_home_that_has_a_broker(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`--home ~` by mistake: the advice names ~/.pullbroker, where the broker wrote."""
        real = tmp_path / ".pullbroker"
        real.mkdir()
        (real / "broker.json").write_text(json.dumps({"address": "127.0.0.1:1"}))
        monkeypatch.setenv("PULLBROKER_HOME", str(real))
        with pytest.raises(ConfigurationError) as caught:
            Home(tmp_path).read_address()
        assert f"pass --home {real}" in str(caught.value)
        assert "pullbroker serve --home" not in str(caught.value)

    def test_a_folder_that_is_no_home_is_named_as_such(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A folder with neither broker.json nor tls/ is not a home: no advice to serve there."""
        monkeypatch.setenv("PULLBROKER_HOME", str(tmp_path / "absent"))
        with pytest.raises(ConfigurationError) as caught:
            Home(tmp_path).read_address()
        assert "is not a pullbroker home" in str(caught.value)
        assert "pullbroker serve --home" not in str(caught.value)
