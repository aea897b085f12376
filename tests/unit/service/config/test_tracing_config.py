"""The broker's tracing settings: off by default, from the file, the flag or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pullbroker_client.home import Home
from pullbroker_client.tracing import ENDPOINT_ENV
from pullbroker_service.config.broker import ConfigError, TracingConfig, load_config


@pytest.fixture(autouse=True)
def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)


class TestTracingSettings:
    def test_off_by_default(self, tmp_path: Path) -> None:
        """Without a file section, a flag or the variable there are no tracing settings."""
        assert load_config(home=Home(tmp_path)).tracing is None

    def test_file_section(self, tmp_path: Path) -> None:
        """tracing: {otlp_endpoint, service_name, sample_ratio} is read from the file."""
        path = tmp_path / "broker.yaml"
        path.write_text(
            "tracing:\n  otlp_endpoint: http://collector:4318/\n"
            "  service_name: pullbroker-prod\n  sample_ratio: 0.25\n"
        )
        config = load_config(home=Home(tmp_path), config_file=path)
        assert config.tracing == TracingConfig("http://collector:4318", "pullbroker-prod", 0.25)

    def test_flag_then_file_then_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--otlp-endpoint beats the file, the file beats OTEL_EXPORTER_OTLP_ENDPOINT, and
        the variable alone turns tracing on with the defaults."""
        monkeypatch.setenv(ENDPOINT_ENV, "http://from-env:4318")
        home = Home(tmp_path)
        from_env = load_config(home=home).tracing
        assert from_env == TracingConfig("http://from-env:4318")
        path = tmp_path / "broker.yaml"
        path.write_text("tracing:\n  otlp_endpoint: https://from-file:4318\n")
        from_file = load_config(home=home, config_file=path).tracing
        assert from_file is not None
        assert from_file.otlp_endpoint == "https://from-file:4318"
        flagged = load_config(home=home, config_file=path, otlp_endpoint="http://flag:4318")
        assert flagged.tracing is not None
        assert flagged.tracing.otlp_endpoint == "http://flag:4318"

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("collector:4318", "http:// or https://"),
            ("grpc://collector:4317", "http:// or https://"),
            ("http://user:secret@collector:4318", "OTEL_EXPORTER_OTLP_HEADERS"),
            ("http://collector:4318/?token=x", "query"),
            ("http://collector:99999", "not a URL"),
            # Refused before the user/password check: still never echoed.
            ("grpc://u:secret@collector:4317", "http:// or https://"),
            ("http://u:secret@collector:bad/", "not a URL"),
            ("http://collector:99999/?token=secret", "not a URL"),
        ],
    )
    def test_bad_endpoint_names_the_flag(self, tmp_path: Path, url: str, why: str) -> None:
        """A bad URL is a ConfigError naming --otlp-endpoint and what is wrong, never echoing
        a password it holds."""
        with pytest.raises(ConfigError, match=f"--otlp-endpoint: .*{why}") as raised:
            load_config(home=Home(tmp_path), otlp_endpoint=url)
        assert "secret" not in str(raised.value)

    def test_bad_endpoint_names_the_field_or_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """From the file the error names tracing.otlp_endpoint; from the environment, the
        variable."""
        path = tmp_path / "broker.yaml"
        path.write_text("tracing:\n  otlp_endpoint: ftp://collector\n")
        with pytest.raises(ConfigError, match=r"^tracing\.otlp_endpoint: "):
            load_config(home=Home(tmp_path), config_file=path)
        monkeypatch.setenv(ENDPOINT_ENV, "collector")
        with pytest.raises(ConfigError, match=f"^{ENDPOINT_ENV}: "):
            load_config(home=Home(tmp_path))

    @pytest.mark.parametrize(
        ("section", "match"),
        [
            ("  service_name: x\n", "tracing needs otlp_endpoint"),
            ("  otlp_endpoint: http://c:4318\n  sample_ratio: 2\n", "between 0 and 1"),
            ("  otlp_endpoint: http://c:4318\n  service_name: ' '\n", "service_name"),
            ("  otlp_endpoint: http://c:4318\n  headers: x\n", "unknown setting 'tracing.headers'"),
        ],
    )
    def test_section_errors(self, tmp_path: Path, section: str, match: str) -> None:
        """A section without an endpoint, a ratio outside 0-1, an empty name or an unknown
        key are refused with what to fix."""
        path = tmp_path / "broker.yaml"
        path.write_text("tracing:\n" + section)
        with pytest.raises(ConfigError, match=match):
            load_config(home=Home(tmp_path), config_file=path)
