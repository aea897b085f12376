"""Secret-backend settings (local, vault, aws) and their validation, for config.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pullbroker_service.config.errors import ConfigError

DEFAULT_PREFIX = "pullbroker/registries"
DEFAULT_K8S_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
SECRET_BACKENDS = ("local", "vault", "aws")
KEY_WRAPPERS = ("file", "kms", "vault-transit")
VAULT_AUTH_METHODS = ("token", "approle", "kubernetes")


@dataclass(frozen=True)
class LocalConfig:
    """The embedded store (<home>/secrets/secrets.db) and who wraps its data keys."""

    key_wrapper: str = "file"
    """"file" (a 0600 key file), "kms" (AWS KMS, settings from the `aws` section) or
    "vault-transit" (a derived transit key, settings from the `vault` section)."""
    kek_file: Path | None = None
    """The key file of the "file" wrapper; None means <home>/secrets/kek.key."""


@dataclass(frozen=True)
class VaultAuthConfig:
    """How the broker logs in to Vault. Each credential comes from a file or a variable."""

    method: str = "token"
    """"token", "approle" or "kubernetes"."""
    token_file: Path | None = None
    """token: a file holding the token (re-read at every login, e.g. a Vault agent sink)."""
    token_env: str | None = None
    """token: the environment variable holding the token instead."""
    role_id_file: Path | None = None
    """approle: a file holding the role id."""
    role_id_env: str | None = None
    """approle: the environment variable holding the role id instead."""
    secret_id_file: Path | None = None
    """approle: a file holding the secret id."""
    secret_id_env: str | None = None
    """approle: the environment variable holding the secret id instead."""
    role: str = ""
    """kubernetes: the Vault role bound to the broker's service account."""
    jwt_file: Path = DEFAULT_K8S_TOKEN_FILE
    """kubernetes: the service-account token file (projected tokens rotate; re-read)."""
    mount: str = ""
    """Where the auth method is mounted; "" means its default (approle, kubernetes)."""


@dataclass(frozen=True)
class VaultConfig:
    """Vault or OpenBao: KV v2 for the "vault" backend, transit for "vault-transit" keys."""

    url: str = ""
    """Base URL, e.g. https://vault.internal:8200."""
    ca_file: Path | None = None
    """PEM CA bundle trusted for Vault's certificate; None means the system bundle (never
    REQUESTS_CA_BUNDLE or other environment variables)."""
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace, if any."""
    client_cert_file: Path | None = None
    """PEM client certificate, when Vault's listener requires one (with client_key_file)."""
    client_key_file: Path | None = None
    """PEM key of client_cert_file."""
    timeout_seconds: float = 10.0
    """Timeout of each HTTP request to Vault."""
    mount: str = "secret"
    """The KV v2 mount holding credentials."""
    prefix: str = DEFAULT_PREFIX
    """Path under the mount; each registry's credential is <prefix>/<registry id>."""
    cas: bool = False
    """Write with check-and-set (required when the mount sets cas_required)."""
    transit_mount: str = "transit"
    """vault-transit key wrapper: the transit mount."""
    transit_key: str = "pullbroker"
    """vault-transit key wrapper: the key, created with derived=true."""
    auth: VaultAuthConfig = field(default_factory=VaultAuthConfig)
    """How the broker logs in."""


@dataclass(frozen=True)
class AwsConfig:
    """AWS Secrets Manager for the "aws" backend, KMS for the "kms" key wrapper."""

    region: str = ""
    """AWS region, e.g. eu-west-1."""
    kms_key_id: str = ""
    """The customer KMS key (id, ARN or alias/NAME) that encrypts secrets or wraps data keys."""
    endpoint_url: str | None = None
    """An explicit endpoint (a VPC endpoint, a test server); None means AWS's public one."""
    ca_file: Path | None = None
    """PEM CA bundle for the endpoint; None means botocore's bundle (never AWS_CA_BUNDLE)."""
    prefix: str = DEFAULT_PREFIX
    """Secret names are <prefix>/<registry id>."""
    recovery_window_days: int = 30
    """Deleted secrets stay recoverable this many days (7-30); 0 deletes at once."""
    access_key_id_file: Path | None = None
    """A file holding a static access key id; unset means the standard chain (AWS_* variables,
    ~/.aws files, web identity, instance role)."""
    secret_access_key_file: Path | None = None
    """A file holding the secret access key of access_key_id_file."""
    session_token_file: Path | None = None
    """A file holding a session token for temporary static credentials."""
    connect_timeout_seconds: float = 5.0
    """Timeout to connect to an endpoint."""
    read_timeout_seconds: float = 10.0
    """Timeout to read an answer."""
    max_attempts: int = 3
    """Attempts per call, with botocore's standard backoff."""


@dataclass(frozen=True)
class SecretsConfig:
    """Where credentials live, and the settings of every backend the broker may use."""

    backend: str = "local"
    """"local" (embedded, envelope-encrypted), "vault" or "aws"."""
    local: LocalConfig = field(default_factory=LocalConfig)
    """The embedded store's key wrapper."""
    vault: VaultConfig | None = None
    """Vault settings (needed for backend vault or key wrapper vault-transit)."""
    aws: AwsConfig | None = None
    """AWS settings (needed for backend aws or key wrapper kms)."""


def require_backend_settings(secrets: SecretsConfig, backend: str) -> None:
    """ConfigError unless `secrets` describes everything `backend` needs."""
    if backend not in SECRET_BACKENDS:
        raise ConfigError(f"secret backend {backend!r}: choose one of {', '.join(SECRET_BACKENDS)}")
    wrapper = secrets.local.key_wrapper
    if wrapper not in KEY_WRAPPERS:
        raise ConfigError(f"local.key_wrapper {wrapper!r}: choose one of {', '.join(KEY_WRAPPERS)}")
    if backend == "vault":
        _validate_vault(secrets.vault, "secret backend vault")
    elif backend == "aws":
        _validate_aws(secrets.aws, "secret backend aws")
    elif wrapper == "vault-transit":
        _validate_vault(secrets.vault, "local.key_wrapper vault-transit")
    elif wrapper == "kms":
        _validate_aws(secrets.aws, "local.key_wrapper kms")


def validate_secrets(secrets: SecretsConfig) -> None:
    if secrets.backend not in SECRET_BACKENDS:
        raise ConfigError(
            f"secret_backend {secrets.backend!r}: choose one of {', '.join(SECRET_BACKENDS)}"
        )
    require_backend_settings(secrets, secrets.backend)
    # A section that is present but unused is still checked: a migration may use it.
    if secrets.vault is not None:
        _validate_vault(secrets.vault, "the vault section")
    if secrets.aws is not None:
        _validate_aws(secrets.aws, "the aws section")


def _validate_vault(vault: VaultConfig | None, needed_by: str) -> None:
    if vault is None:
        raise ConfigError(
            f"{needed_by} needs a `vault` section, e.g. vault: {{url: https://vault:8200, "
            "auth: {method: approle, role_id_file: /etc/pullbroker/role-id, "
            "secret_id_file: /etc/pullbroker/secret-id}}"
        )
    if not vault.url.startswith(("https://", "http://")):
        raise ConfigError(f"vault.url {vault.url!r} must be http(s)://HOST:PORT")
    if (vault.client_cert_file is None) != (vault.client_key_file is None):
        raise ConfigError("vault.client_cert_file and vault.client_key_file go together")
    if not vault.prefix.strip("/") or not vault.mount.strip("/"):
        raise ConfigError("vault.mount and vault.prefix must not be empty")
    _validate_vault_auth(vault.auth)


def _validate_vault_auth(auth: VaultAuthConfig) -> None:
    if auth.method not in VAULT_AUTH_METHODS:
        raise ConfigError(
            f"vault.auth.method {auth.method!r}: choose one of {', '.join(VAULT_AUTH_METHODS)}"
        )
    needed = {"token": ("token",), "approle": ("role_id", "secret_id"), "kubernetes": ()}
    for name in needed[auth.method]:
        from_file, from_env = getattr(auth, f"{name}_file"), getattr(auth, f"{name}_env")
        if (from_file is None) == (from_env is None):
            raise ConfigError(
                f"vault.auth.method {auth.method} needs exactly one of vault.auth.{name}_file "
                f"(a 0600 file holding it) or vault.auth.{name}_env (a variable holding it)"
            )
        if from_env is not None and not from_env.isidentifier():
            raise ConfigError(f"vault.auth.{name}_env {from_env!r} is not a variable name")
    if auth.method == "kubernetes" and not auth.role:
        raise ConfigError("vault.auth.method kubernetes needs vault.auth.role (the Vault role)")


def _validate_aws(aws: AwsConfig | None, needed_by: str) -> None:
    if aws is None:
        raise ConfigError(
            f"{needed_by} needs an `aws` section, e.g. aws: {{region: eu-west-1, "
            "kms_key_id: alias/pullbroker}"
        )
    if not aws.region:
        raise ConfigError("aws.region must be set, e.g. region: eu-west-1")
    if not aws.kms_key_id:
        raise ConfigError("aws.kms_key_id must name a KMS key: an id, an ARN or alias/NAME")
    if aws.recovery_window_days != 0 and not 7 <= aws.recovery_window_days <= 30:
        raise ConfigError("aws.recovery_window_days must be 7-30, or 0 to delete at once")
    if (aws.access_key_id_file is None) != (aws.secret_access_key_file is None):
        raise ConfigError("aws.access_key_id_file and aws.secret_access_key_file go together")
    if aws.session_token_file is not None and aws.access_key_id_file is None:
        raise ConfigError("aws.session_token_file needs aws.access_key_id_file too")
    if aws.max_attempts < 1:
        raise ConfigError("aws.max_attempts must be at least 1")
