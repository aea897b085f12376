"""Broker configuration: frozen dataclasses, read from flags and an optional YAML or TOML file.

Precedence: command-line flags, then the `--config` file, then these defaults. The insecure
development port is a flag only: no file can open a plaintext port by accident. Credentials
of the secret backends themselves (a Vault token, an AppRole secret id, AWS keys) are never
values in the file: the file names a file or an environment variable holding them, and an
inline secret is refused. Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pullbroker_client.home import Home
from pullbroker_client.metrics_http import parse_listen

from pullbroker_service.config.audit import AuditConfig
from pullbroker_service.config.database import (
    INLINE_URL_KEYS,
    DatabaseConfig,
    inline_url_message,
    validate_database,
)
from pullbroker_service.config.errors import ConfigError
from pullbroker_service.config.reader import SettingsReader, read_file, to_path
from pullbroker_service.config.secret_backends import (
    KEY_WRAPPERS,
    SECRET_BACKENDS,
    VAULT_AUTH_METHODS,
    AwsConfig,
    LocalConfig,
    SecretsConfig,
    VaultAuthConfig,
    VaultConfig,
    require_backend_settings,
    validate_secrets,
)
from pullbroker_service.config.token_cache import TokenCacheConfig, validate_token_cache
from pullbroker_service.config.tracing import TracingConfig, resolve_tracing

__all__ = [
    "DEFAULT_LISTEN",
    "KEY_WRAPPERS",
    "SECRET_BACKENDS",
    "VAULT_AUTH_METHODS",
    "AuditConfig",
    "AwsConfig",
    "BrokerConfig",
    "ConfigError",
    "DatabaseConfig",
    "KubernetesConfig",
    "LocalConfig",
    "RateLimitConfig",
    "SecretsConfig",
    "ServerLimits",
    "TlsConfig",
    "TokenCacheConfig",
    "TracingConfig",
    "VaultAuthConfig",
    "VaultConfig",
    "load_config",
    "require_backend_settings",
]

DEFAULT_LISTEN = "127.0.0.1:50051"
_LOG_LEVELS = ("debug", "info", "warning", "error")
# Keys that would put a backend credential in the file itself.
_INLINE_SECRETS = frozenset(
    {"token", "role_id", "secret_id", "jwt", "password", "access_key_id", "secret_access_key"}
    | {"session_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
)


@dataclass(frozen=True)
class ServerLimits:
    """gRPC transport limits and keepalive."""

    max_receive_message_bytes: int = 1024 * 1024
    """Largest request accepted; bigger ones fail with RESOURCE_EXHAUSTED (a registry record
    with a CA bundle is a few KiB)."""

    max_send_message_bytes: int = 4 * 1024 * 1024
    """Largest response sent (a page of 1000 registries fits)."""

    max_call_seconds: float = 60.0
    """A unary call still running after this long ends with DEADLINE_EXCEEDED, whatever
    deadline its client set (streams such as WatchDeployment are exempt)."""

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

    max_connection_age_seconds: int = 0
    """Ask clients (GOAWAY) to reconnect after a connection is this old; 0 never does. With
    clients balancing over a DNS name (a headless Service), e.g. 300 makes them resolve it
    again and reach replicas added since. Calls and streams already running finish."""


@dataclass(frozen=True)
class TlsConfig:
    """The broker's own TLS material from files (cert-manager, SPIRE, a corporate CA).

    Without this section the development CA in <home>/tls is used (created on first start).
    """

    ca_file: Path
    """PEM bundle of the CAs whose client certificates are accepted (nodes, admins)."""

    cert_file: Path
    """PEM certificate chain the broker presents."""

    key_file: Path
    """PEM private key of cert_file (keep it 0600)."""


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-identity token buckets; a call over the limit gets RESOURCE_EXHAUSTED + retry-after."""

    issue_pull_token_per_second: float = 20.0
    """Sustained IssuePullToken calls per identity (a node asks once per image, near expiry)."""

    issue_pull_token_burst: int = 100
    """IssuePullToken calls an identity may make at once."""

    test_connection_per_second: float = 0.5
    """Sustained TestConnection calls per identity (each one reaches the registry)."""

    test_connection_burst: int = 5
    """TestConnection calls an identity may make at once."""


@dataclass(frozen=True)
class KubernetesConfig:
    """Verifying pods' service-account tokens, which the kubelet credential provider forwards
    (IssuePullTokenRequest.service_account_token), so policy rules can scope pulls by
    namespace and service account. The broker never dials the API server."""

    issuer: str = ""
    """The cluster's --service-account-issuer; a token's `iss` must equal it."""
    audience: str = "pullbroker"
    """A token's `aud` must contain it: tokenAttributes.serviceAccountTokenAudience in the
    kubelet CredentialProviderConfig."""
    jwks_file: Path | None = None
    """The cluster's /openid/v1/jwks saved to a file (kept fresh by a sidecar or CronJob
    writing a temporary file and renaming it); re-read when it changes."""
    leeway_seconds: float = 30.0
    """Clock skew allowed on a token's exp, nbf and iat."""


@dataclass(frozen=True)
class BrokerConfig:
    """Everything `pullbroker serve` needs; bootstrap/main.py turns it into adapters."""

    home: Home
    """The home folder: certificates, policy, stores, logs and broker.json."""

    listen: str = DEFAULT_LISTEN
    """host:port of the mTLS listener; port 0 picks a free one (written to broker.json)."""

    insecure_dev_port: int | None = None
    """A plaintext port on 127.0.0.1 for local debugging only; callers there have the identity
    "insecure:dev-port", which the policy denies unless a rule names it. Flag only."""

    policy_path: Path | None = None
    """The policy file; None means <home>/policy.yaml."""

    log_level: str = "info"
    """Lowest level written: debug, info, warning or error."""

    log_to_stderr: bool = True
    """Write log lines to stderr as well as <home>/logs/broker.log."""

    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    """The secret backend (file keys: secret_backend, local, vault, aws)."""

    backend_check_interval_seconds: float = 5.0
    """How often the secret backend is checked; health "pullbroker.secrets" follows it."""

    reconcile_interval_seconds: float = 60.0
    """How often half-done creates, orphaned secrets and stray versions are cleaned up."""

    reconcile_grace_seconds: float = 120.0
    """A pending record or stray version younger than this may be a write still in flight
    (a put waits up to the backend's timeouts and retries), so the reconciler leaves it."""

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

    tls: TlsConfig | None = None
    """The broker's TLS material from files; None means the development CA in <home>/tls."""

    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    """Per-identity limits on the calls that cost upstream work."""

    allow_loopback_registries: bool = False
    """Let registry URLs and token realms point at loopback addresses (a registry on this
    host). Off by default: a user-supplied URL must not make the broker dial itself (SSRF)."""

    allow_private_registries: bool = False
    """Let registry URLs and token realms point at private (RFC 1918, ULA) addresses, for
    registries inside the network. Link-local and metadata addresses are always refused."""

    kubernetes: KubernetesConfig | None = None
    """Verify pods' service-account tokens; None ignores them (rules with a `kubernetes`
    key then grant nothing)."""

    metrics_listen: str | None = None
    """HOST:PORT of a plain-HTTP Prometheus listener (`/metrics`); None (the default) opens
    none. Nothing served there is secret; in Kubernetes 0.0.0.0:9090 behind a
    NetworkPolicy is usual, on a shared host prefer 127.0.0.1. Port 0 picks a free one."""
    database: DatabaseConfig | None = None
    """PostgreSQL for metadata and the local store's ciphertexts, shared by replicas; None
    keeps SQLite files in the home folder."""
    audit: AuditConfig = field(default_factory=AuditConfig)
    """The audit file's rotation by size."""

    token_cache: TokenCacheConfig = field(default_factory=TokenCacheConfig)
    """Minted tokens in this replica's memory (config/token_cache.py)."""

    tracing: TracingConfig | None = None
    """OpenTelemetry spans to an OTLP/HTTP collector (config/tracing.py); None (the default,
    unless --otlp-endpoint or $OTEL_EXPORTER_OTLP_ENDPOINT is set) imports no OpenTelemetry."""

    @property
    def policy_file(self) -> Path:
        return self.policy_path or self.home.policy_yaml

    @property
    def secret_backend(self) -> str:
        return self.secrets.backend


def load_config(
    *,
    home: Home | None = None,
    config_file: Path | None = None,
    listen: str | None = None,
    insecure_dev_port: int | None = None,
    metrics_listen: str | None = None,
    otlp_endpoint: str | None = None,
) -> BrokerConfig:
    """The configuration for `serve`: defaults, then `config_file`, then flags.

    `home` is the --home flag; None means the file's `home`, else $PULLBROKER_HOME, else
    ~/.pullbroker.
    """
    data = read_file(config_file) if config_file is not None else {}
    where = str(config_file) if config_file is not None else "flags"
    base = config_file.parent if config_file is not None else Path.cwd()
    file_home = data.pop("home", None)
    if home is None:
        home = Home.resolve(to_path(f"{where}: home", file_home, base) if file_home else None)
    config = _apply(BrokerConfig(home=home), data, where, base)
    if listen is not None:
        config = replace(config, listen=listen)
    if insecure_dev_port is not None:
        config = replace(config, insecure_dev_port=insecure_dev_port)
    if metrics_listen is not None:
        config = replace(config, metrics_listen=metrics_listen)
    config = replace(config, tracing=resolve_tracing(config.tracing, otlp_endpoint))
    _validate(config)
    validate_secrets(config.secrets)
    return config


_SECRETS_KEYS = {"secret_backend": "backend", "local": "local", "vault": "vault", "aws": "aws"}
_SECTIONS: dict[str, type] = {
    c.__name__: c
    for c in (
        ServerLimits,
        LocalConfig,
        VaultConfig,
        AwsConfig,
        VaultAuthConfig,
        TlsConfig,
        KubernetesConfig,
        RateLimitConfig,
        DatabaseConfig,
        TracingConfig,
        AuditConfig,
        TokenCacheConfig,
    )
}


def _apply(config: BrokerConfig, data: dict[str, Any], where: str, base: Path) -> BrokerConfig:
    reader = SettingsReader(where, base, _SECTIONS, _inline_refusal)
    secrets_data = {_SECRETS_KEYS[k]: data.pop(k) for k in list(data) if k in _SECRETS_KEYS}
    known = {f.name for f in fields(BrokerConfig)} - {"home", "insecure_dev_port", "secrets"}
    reader.check_keys(data, known | set(_SECRETS_KEYS) | {"home"}, "")
    values = reader.convert(BrokerConfig, data, "")
    backend = reader.scalar("str", secrets_data.pop("backend", "local"), f"{where}: secret_backend")
    secrets = reader.build(SecretsConfig, secrets_data, "")
    return replace(config, secrets=replace(secrets, backend=backend), **values)


def _inline_refusal(prefix: str, key: str) -> str | None:
    """Why `prefix + key` may not hold a value in the file, or None."""
    name = prefix + key
    if prefix == "database." and key in INLINE_URL_KEYS:
        return inline_url_message(name)
    if key not in _INLINE_SECRETS:
        return None
    section = prefix.rstrip(".")
    hint = (
        f"write `{key}_file: /path/to/a/0600/file` (or `{key}_env: VARIABLE`)"
        if section.startswith("vault")
        else f"write `{key}_file: /path/to/a/0600/file`, or leave it out and use the standard "
        "AWS variables or ~/.aws files"
    )
    return (
        f"{name} holds a credential inline; the config file never holds secrets "
        f"(it is read by people, backups and config management): {hint} under {section}"
    )


def _validate(config: BrokerConfig) -> None:
    host, sep, port = config.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"listen address {config.listen!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN}"
        )
    if config.metrics_listen is not None:
        try:
            parse_listen(config.metrics_listen)
        except ValueError as exc:
            raise ConfigError(f"metrics_listen (--metrics-listen): {exc}") from None
    if config.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r}: choose one of {', '.join(_LOG_LEVELS)}")
    port_ = config.insecure_dev_port
    if port_ is not None and not 0 <= port_ <= 65535:
        raise ConfigError(f"--insecure-dev-port {port_} is not a port number (0-65535)")
    for name in ("backend_check_interval_seconds", "reconcile_interval_seconds"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be more than 0 seconds")
    if config.database is not None:
        validate_database(config.database)
    validate_token_cache(config.token_cache)
    k8s = config.kubernetes
    if k8s is not None and (not k8s.issuer or not k8s.audience or k8s.jwks_file is None):
        raise ConfigError(
            "kubernetes needs issuer, audience and jwks_file, e.g. kubernetes: {issuer: "
            "https://kubernetes.default.svc.cluster.local, audience: pullbroker, "
            "jwks_file: /etc/pullbroker/k8s-jwks.json}"
        )
