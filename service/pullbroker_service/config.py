"""Broker configuration: frozen dataclasses, read from flags and an optional YAML file.

Precedence: command-line flags, then the `--config` file, then these defaults. The insecure
development port is a flag only: no file can open a plaintext port by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml
from pullbroker_client.home import Home

DEFAULT_LISTEN = "127.0.0.1:50051"
_LOG_LEVELS = ("debug", "info", "warning", "error")
_SECRET_BACKENDS = ("local",)


class ConfigError(Exception):
    """The configuration file or a flag is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class ServerLimits:
    """gRPC transport limits and keepalive."""

    max_receive_message_bytes: int = 1024 * 1024
    """Largest request accepted; bigger ones fail with RESOURCE_EXHAUSTED (a registry record
    with a CA bundle is a few KiB)."""

    max_send_message_bytes: int = 4 * 1024 * 1024
    """Largest response sent (a page of 1000 registries fits)."""

    max_concurrent_streams: int = 256
    """Concurrent RPCs per HTTP/2 connection; a sidecar needs a handful."""

    keepalive_time_seconds: int = 60
    """The broker pings idle connections this often to find dead peers."""

    keepalive_timeout_seconds: int = 20
    """A ping unanswered for this long closes the connection."""

    min_client_ping_interval_seconds: int = 10
    """Clients may ping no more often than this (without calls in flight); faster pings are
    answered with GOAWAY, as gRPC's keepalive enforcement prescribes."""

    max_connection_idle_seconds: int = 0
    """Close connections idle this long; 0 keeps them (sidecars reuse one channel)."""


@dataclass(frozen=True)
class BrokerConfig:
    """Everything `pullbroker serve` needs; main.py turns it into adapters."""

    home: Home
    """The home folder: certificates, policy, stores, logs and broker.json."""

    listen: str = DEFAULT_LISTEN
    """host:port of the mTLS listener; port 0 picks a free one (written to broker.json)."""

    insecure_dev_port: int | None = None
    """A plaintext port on 127.0.0.1 for local debugging only; callers there have the identity
    "CN=insecure-dev", which the policy denies unless a rule names it. Flag only."""

    policy_path: Path | None = None
    """The policy file; None means <home>/policy.yaml."""

    log_level: str = "info"
    """Lowest level written: debug, info, warning or error."""

    log_to_stderr: bool = True
    """Write log lines to stderr as well as <home>/logs/broker.log."""

    secret_backend: str = "local"  # noqa: S105 - a backend name, not a secret
    """Where credentials live: "local" (the embedded envelope-encrypted store)."""

    shutdown_grace_seconds: float = 5.0
    """On SIGTERM/SIGINT, in-flight calls get this long to finish."""

    ecr_endpoint_url: str | None = None
    """ECR API endpoint; None means AWS's regional endpoint (set for a local stand-in)."""

    sts_endpoint_url: str | None = None
    """STS endpoint for ECR records with a role to assume; None means the regional one."""

    node_hostname: str | None = None
    """Host name put in the development node certificate; None means this machine's."""

    limits: ServerLimits = field(default_factory=ServerLimits)
    """Transport limits and keepalive."""

    @property
    def policy_file(self) -> Path:
        return self.policy_path or self.home.policy_yaml


def load_config(
    *,
    home: Home,
    config_file: Path | None = None,
    listen: str | None = None,
    insecure_dev_port: int | None = None,
) -> BrokerConfig:
    """The configuration for `serve`: defaults, then `config_file`, then flags."""
    config = BrokerConfig(home=home)
    if config_file is not None:
        config = _apply_file(config, config_file)
    if listen is not None:
        config = replace(config, listen=listen)
    if insecure_dev_port is not None:
        config = replace(config, insecure_dev_port=insecure_dev_port)
    _validate(config)
    return config


def _apply_file(config: BrokerConfig, path: Path) -> BrokerConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(f"config file {path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    allowed = {f.name for f in fields(BrokerConfig)} - {"home", "insecure_dev_port", "limits"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "limits":
            values["limits"] = _limits(path, value)
        elif key == "policy_path":
            values[key] = Path(str(value)).expanduser()
        elif key in allowed:
            values[key] = value
        else:
            raise ConfigError(
                f"config file {path}: unknown setting {key!r}; known: "
                + ", ".join(sorted(allowed | {"limits"}))
            )
    try:
        return replace(config, **values)
    except TypeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _limits(path: Path, value: object) -> ServerLimits:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config file {path}: limits must be a mapping")
    known = {f.name for f in fields(ServerLimits)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown limits {sorted(map(str, unknown))}; known: "
            + ", ".join(sorted(known))
        )
    for key, item in value.items():
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise ConfigError(f"config file {path}: limits.{key} must be a non-negative integer")
    return ServerLimits(**value)


def _validate(config: BrokerConfig) -> None:
    host, sep, port = config.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"listen address {config.listen!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN}"
        )
    if config.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r}: choose one of {', '.join(_LOG_LEVELS)}")
    if config.secret_backend not in _SECRET_BACKENDS:
        raise ConfigError(
            f"secret_backend {config.secret_backend!r}: choose one of {', '.join(_SECRET_BACKENDS)}"
        )
    port_ = config.insecure_dev_port
    if port_ is not None and not 0 <= port_ <= 65535:
        raise ConfigError(f"--insecure-dev-port {port_} is not a port number (0-65535)")
    if not isinstance(config.log_to_stderr, bool):
        raise ConfigError("log_to_stderr must be true or false")
    if (
        not isinstance(config.shutdown_grace_seconds, int | float)
        or config.shutdown_grace_seconds < 0
    ):
        raise ConfigError("shutdown_grace_seconds must be a non-negative number")
