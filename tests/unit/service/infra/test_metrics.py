"""Broker metrics: bounded labels, outcome classes, and the metrics settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from pullbroker_client.home import Home
from pullbroker_client.metrics_http import parse_listen
from pullbroker_service.config.broker import ConfigError, load_config
from pullbroker_service.domain.errors import (
    CredentialRejected,
    QuotaExceeded,
    RateLimited,
    RegistryTLSFailure,
    ScopeNotAllowed,
)
from pullbroker_service.infra.metrics import (
    FAILURE_REASONS,
    OUTCOMES,
    BrokerMetrics,
    failure_reason,
    outcome_of,
)


class TestClassification:
    def test_outcomes_and_reasons(self) -> None:
        """The most specific error class wins; anything unknown is internal / other."""
        assert outcome_of(ScopeNotAllowed("x")) == "denied"
        assert outcome_of(QuotaExceeded("x", retry_after=1)) == "rate_limited"
        assert outcome_of(CredentialRejected("x")) == "upstream_error"
        assert outcome_of(ValueError("x")) == "internal"
        assert failure_reason(CredentialRejected("x")) == "rejected"
        assert failure_reason(RegistryTLSFailure("x")) == "tls"
        assert failure_reason(RateLimited("x", retry_after=1)) == "rate_limited"
        assert failure_reason(ValueError("x")) == "other"
        assert {"denied", "rate_limited", "issued"} <= set(OUTCOMES)
        assert {"rejected", "not_allowed", "unreachable", "tls", "rate_limited"} <= set(
            FAILURE_REASONS
        )


class TestRegistry:
    def test_each_broker_has_its_own_registry(self) -> None:
        """Two BrokerMetrics in one process count apart (no global default registry)."""
        one, two = BrokerMetrics(), BrokerMetrics()
        one.token_request("IssuePullToken", "ghcr", "issued")
        assert b'kind="ghcr",outcome="issued",rpc="IssuePullToken"} 1.0' in generate_latest(
            one.registry
        )
        assert b'kind="ghcr",outcome="issued",rpc="IssuePullToken"} 0.0' in generate_latest(
            two.registry
        )

    def test_unknown_kind_falls_back_to_none(self) -> None:
        """A mint of a kind outside the enum is labelled "none", never a free-form value."""
        metrics = BrokerMetrics()
        metrics.mint_observed("something-else", 0.1, CredentialRejected("x"))
        text = generate_latest(metrics.registry).decode()
        assert "something-else" not in text
        assert 'pullbroker_upstream_mint_failures_total{kind="none",reason="rejected"} 1.0' in text


class TestSettings:
    def test_listen_is_off_by_default_and_validated(self, tmp_path: Path) -> None:
        """No listener unless asked; a bad HOST:PORT is a ConfigError naming the flag."""
        home = Home(tmp_path / "home")
        assert load_config(home=home).metrics_listen is None
        assert load_config(home=home, metrics_listen="[::1]:0").metrics_listen == "[::1]:0"
        with pytest.raises(ConfigError, match="--metrics-listen"):
            load_config(home=home, metrics_listen="9090")

    def test_file_key(self, tmp_path: Path) -> None:
        """metrics_listen comes from the config file too, validated the same way."""
        config = tmp_path / "broker.yaml"
        config.write_text("metrics_listen: 0.0.0.0:9090\n")
        loaded = load_config(home=Home(tmp_path / "home"), config_file=config)
        assert loaded.metrics_listen == "0.0.0.0:9090"
        config.write_text("metrics_listen: localhost\n")
        with pytest.raises(ConfigError, match="metrics_listen"):
            load_config(home=Home(tmp_path / "home"), config_file=config)

    def test_parse_listen(self) -> None:
        """HOST:PORT and [v6]:PORT parse; a missing or out-of-range port does not."""
        assert parse_listen("127.0.0.1:9090") == ("127.0.0.1", 9090)
        assert parse_listen("[::1]:0") == ("::1", 0)
        for bad in ("9090", ":9090", "host:", "host:70000"):
            with pytest.raises(ValueError, match="HOST:PORT"):
                parse_listen(bad)
