"""Broker configuration: defaults, file, flags, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pullbroker_client.home import Home
from pullbroker_service.config.broker import DEFAULT_LISTEN, ConfigError, load_config


class TestLoadConfig:
    def test_defaults(self, tmp_path: Path) -> None:
        """Without a file or flags: 127.0.0.1:50051, 1 MiB requests, no insecure port."""
        config = load_config(home=Home(tmp_path))
        assert config.listen == DEFAULT_LISTEN
        assert config.limits.max_receive_message_bytes == 1024 * 1024
        assert config.insecure_dev_port is None
        assert config.policy_file == tmp_path / "policy.yaml"

    def test_file_then_flags(self, tmp_path: Path) -> None:
        """The file overrides defaults and flags override the file."""
        path = tmp_path / "broker.yaml"
        path.write_text(
            "listen: 127.0.0.1:6000\nlog_level: debug\nlimits:\n  max_concurrent_streams: 8\n"
        )
        config = load_config(home=Home(tmp_path), config_file=path, listen="127.0.0.1:7000")
        assert config.listen == "127.0.0.1:7000"
        assert config.log_level == "debug"
        assert config.limits.max_concurrent_streams == 8

    def test_file_cannot_open_insecure_port(self, tmp_path: Path) -> None:
        """insecure_dev_port is a flag only: in a file it is an unknown setting."""
        path = tmp_path / "broker.yaml"
        path.write_text("insecure_dev_port: 1234\n")
        with pytest.raises(ConfigError, match="unknown setting 'insecure_dev_port'"):
            load_config(home=Home(tmp_path), config_file=path)

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("listen: nope\n", "HOST:PORT"),
            ("log_level: loud\n", "log_level"),
            ("limits:\n  max_receive_message_bytes: -1\n", "non-negative"),
            ("- a list\n", "mapping"),
            ("secret_backend: s3\n", "secret_backend"),
        ],
    )
    def test_bad_values_are_named(self, tmp_path: Path, text: str, match: str) -> None:
        """Each bad setting fails with a message naming it."""
        path = tmp_path / "broker.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(home=Home(tmp_path), config_file=path)


class TestTokenCacheSection:
    def test_defaults_match_the_cache(self, tmp_path: Path) -> None:
        """Without the section: 10,000 tokens, 64 MiB, a 30 s mint deadline."""
        cache = load_config(home=Home(tmp_path)).token_cache
        assert (cache.max_entries, cache.max_bytes, cache.mint_deadline_seconds) == (
            10_000,
            64 * 1024 * 1024,
            30.0,
        )

    def test_read_from_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "broker.yaml"
        path.write_text(
            "token_cache:\n  max_entries: 50\n  max_bytes: 1048576\n  mint_deadline_seconds: 5\n"
        )
        cache = load_config(home=Home(tmp_path), config_file=path).token_cache
        assert (cache.max_entries, cache.max_bytes, cache.mint_deadline_seconds) == (
            50,
            1048576,
            5.0,
        )

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("token_cache:\n  max_entries: 0\n", "token_cache.max_entries is 0: it must be"),
            ("token_cache:\n  mint_deadline_seconds: 0\n", "token_cache.mint_deadline_seconds"),
            ("token_cache:\n  mint_deadline_seconds: .inf\n", "not inf or nan"),
            ("token_cache:\n  mint_deadline_seconds: .nan\n", "not inf or nan"),
            ("token_cache:\n  mint_deadline_seconds: 3600\n", "between 1 and 600 seconds"),
            ("token_cache:\n  max_bytes: 100000000000000000000000\n", "1 GiB"),
            ("token_cache:\n  max_entries: 10000000\n", "between 1 and 1000000"),
            ("token_cache:\n  ttl: 5\n", "unknown setting 'token_cache.ttl'"),
            ("token_cache: 5\n", "token_cache must be a mapping"),
        ],
    )
    def test_bad_values_are_named(self, tmp_path: Path, text: str, match: str) -> None:
        path = tmp_path / "broker.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(home=Home(tmp_path), config_file=path)
