"""Secret-backend configuration: each backend's section, secrets only from files or variables,
errors that name the key and what to write, and the backend the factory builds from it."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from pullbroker_client.home import Home
from pullbroker_service.api.status import status_for
from pullbroker_service.config.broker import ConfigError, load_config
from pullbroker_service.domain.errors import (
    BackendPermissionDenied,
    BackendUnavailable,
    PermissionDenied,
)
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.factory import (
    BrokerAwsBackend,
    BrokerVaultBackend,
    GuardedBackend,
    aws_connection,
    build_secret_backend,
)
from pullbroker_service.secrets.kek_kms import KmsKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.vault_auth import AppRoleAuth, EnvSource, FileSource, TokenAuth

VAULT_APPROLE = """\
secret_backend: vault
vault:
  url: https://vault.internal:8200
  ca_file: vault-ca.pem
  mount: kv
  prefix: teams/pullbroker
  auth:
    method: approle
    role_id_file: /run/secrets/role-id
    secret_id_env: PB_SECRET_ID
"""

AWS = """\
secret_backend: aws
aws:
  region: eu-west-1
  kms_key_id: alias/pullbroker
  recovery_window_days: 0
  access_key_id_file: keys/id
  secret_access_key_file: keys/secret
"""


def write(tmp_path: Path, text: str, name: str = "broker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, name: str = "broker.yaml") -> object:
    return load_config(home=Home(tmp_path / "home"), config_file=write(tmp_path, text, name))


class TestSections:
    """Each backend's section becomes its frozen dataclass; paths are relative to the file."""

    def test_vault_approle(self, tmp_path: Path) -> None:
        """The vault section, its auth, and a CA path relative to the config file."""
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, VAULT_APPROLE))
        vault = config.secrets.vault
        assert config.secret_backend == "vault"
        assert vault is not None
        assert (vault.url, vault.mount, vault.prefix) == (
            "https://vault.internal:8200",
            "kv",
            "teams/pullbroker",
        )
        assert vault.ca_file == tmp_path / "vault-ca.pem"
        assert vault.auth.role_id_file == Path("/run/secrets/role-id")
        assert vault.auth.secret_id_env == "PB_SECRET_ID"

    def test_aws_from_toml(self, tmp_path: Path) -> None:
        """A .toml file is read as TOML; recovery_window_days 0 means delete at once."""
        text = (
            'secret_backend = "aws"\n[aws]\nregion = "eu-west-1"\n'
            'kms_key_id = "alias/pb"\nrecovery_window_days = 0\n'
        )
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, text, "b.toml"))
        assert config.secrets.aws is not None
        assert (config.secrets.aws.region, config.secrets.aws.recovery_window_days) == (
            "eu-west-1",
            0,
        )

    def test_local_with_kms_wrapper(self, tmp_path: Path) -> None:
        """local + kms takes the KMS key and region from the aws section."""
        text = "local:\n  key_wrapper: kms\naws:\n  region: us-east-1\n  kms_key_id: k\n"
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, text))
        backend = build_secret_backend(config.secrets, config.home)
        assert isinstance(backend.inner, LocalSecretBackend)
        assert "kms:k" in repr(backend.inner)

    def test_flags_override_file_home_and_listen(self, tmp_path: Path) -> None:
        """home and listen from the file apply unless a flag names them."""
        path = write(tmp_path, "home: h\nlisten: 127.0.0.1:6000\n")
        from_file = load_config(config_file=path)
        assert from_file.home == Home(tmp_path / "h")
        flagged = load_config(home=Home(tmp_path / "x"), config_file=path, listen="0.0.0.0:1")
        assert (flagged.home, flagged.listen) == (Home(tmp_path / "x"), "0.0.0.0:1")


class TestInlineSecretsRefused:
    """A backend credential written into the config file is refused with what to write."""

    @pytest.mark.parametrize(
        ("text", "key", "hint"),
        [
            (
                "vault:\n  url: http://v:1\n  auth:\n    method: token\n    token: s.abc\n",
                "vault.auth.token",
                "token_file",
            ),
            (
                "vault:\n  url: http://v:1\n  auth:\n    secret_id: x\n",
                "vault.auth.secret_id",
                "secret_id_env",
            ),
            ("aws:\n  region: r\n  secret_access_key: x\n", "aws.secret_access_key", "_file"),
            ("token: abc\n", "token", "0600"),
        ],
    )
    def test_inline_secret(self, tmp_path: Path, text: str, key: str, hint: str) -> None:
        """The message names the key, says why, says what to write, and never the value."""
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, text)
        message = str(caught.value)
        assert f"{key} holds a credential inline" in message
        assert hint in message
        assert "s.abc" not in message


class TestErrorsNameTheKey:
    """Bad or missing settings fail with the key and an example of what to write."""

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("secret_backend: vault\n", "needs a `vault` section, e.g. vault: {url:"),
            ("secret_backend: aws\n", "needs an `aws` section, e.g. aws: {region:"),
            ("local:\n  key_wrapper: vault-transit\n", "local.key_wrapper vault-transit needs"),
            ("local:\n  key_wrapper: hsm\n", "local.key_wrapper 'hsm': choose one of file, kms"),
            (
                "secret_backend: vault\nvault:\n  url: https://v:1\n  auth:\n    method: approle\n"
                "    role_id_file: r\n",
                "needs exactly one of vault.auth.secret_id_file",
            ),
            (
                "vault:\n  url: https://v:1\n  auth:\n    token_file: t\n    token_env: T\n",
                "exactly one of vault.auth.token_file",
            ),
            ("vault:\n  url: v:1\n  auth: {token_env: T}\n", "vault.url 'v:1' must be http(s)"),
            ("vault:\n  url: https://v\n  auth: {tokenfile: t}\n", "unknown setting 'vault.auth"),
            ("vault:\n  url: https://v\n  timeout_seconds: fast\n", "vault.timeout_seconds must"),
            ("aws:\n  region: r\n  kms_key_id: k\n  recovery_window_days: 3\n", "7-30, or 0"),
            ("aws:\n  region: r\n", "aws.kms_key_id must name a KMS key"),
            ("aws:\n  region: r\n  kms_key_id: k\n  access_key_id_file: a\n", "go together"),
            (
                "vault:\n  url: https://v\n  auth: {method: kubernetes}\n",
                "needs vault.auth.role",
            ),
            ("vault: [1]\n", "vault must be a mapping"),
            ("reconcile_interval_seconds: 0\n", "reconcile_interval_seconds must be more than 0"),
        ],
    )
    def test_message(self, tmp_path: Path, text: str, fragment: str) -> None:
        """The error says which key is wrong and how to fix it."""
        with pytest.raises(ConfigError, match=None) as caught:
            load(tmp_path, text)
        assert fragment in str(caught.value)


class TestFactory:
    """The factory builds the configured adapter, without contacting anything yet."""

    def test_vault_backend_and_auth(self, tmp_path: Path) -> None:
        """Vault KV under the configured mount/prefix, AppRole credentials from file and env."""
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, VAULT_APPROLE))
        backend = build_secret_backend(config.secrets, config.home)
        assert isinstance(backend.inner, BrokerVaultBackend)
        assert backend.name == "vault"
        assert backend.inner.path_for("r1") == "teams/pullbroker/r1"
        auth = backend.inner._session.auth
        assert isinstance(auth, AppRoleAuth)
        assert auth.role_id == FileSource(Path("/run/secrets/role-id"))
        assert auth.secret_id == EnvSource("PB_SECRET_ID")

    def test_token_auth_from_env(self, tmp_path: Path) -> None:
        """method token with token_env reads the named variable at login."""
        text = "secret_backend: vault\nvault:\n  url: http://v:1\n  auth: {token_env: VT}\n"
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, text))
        backend = build_secret_backend(config.secrets, config.home)
        assert isinstance(backend.inner, BrokerVaultBackend)
        assert backend.inner._session.auth == TokenAuth(EnvSource("VT"))

    def test_aws_keys_from_files_never_shown(self, tmp_path: Path) -> None:
        """Static keys are read from the configured files; the connection's repr hides them."""
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "id").write_text("AKIAEXAMPLE\n")
        (tmp_path / "keys" / "secret").write_text("very-secret-key-value\n")
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, AWS))
        assert config.secrets.aws is not None
        connection = aws_connection(config.secrets.aws)
        assert connection.access_key_id == "AKIAEXAMPLE"
        assert connection.secret_access_key is not None
        assert connection.secret_access_key.reveal() == "very-secret-key-value"
        assert "very-secret-key-value" not in repr(connection)
        backend = build_secret_backend(config.secrets, config.home)
        assert isinstance(backend.inner, BrokerAwsBackend)
        assert backend.inner._recovery is None, "0 days means delete at once"

    def test_missing_key_file_is_a_clear_error(self, tmp_path: Path) -> None:
        """An unreadable credential file names the file, not its (absent) content."""
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, AWS))
        assert config.secrets.aws is not None
        with pytest.raises(BackendUnavailable, match=r"the AWS credential file .*/keys/id"):
            aws_connection(config.secrets.aws)

    def test_local_default_kek_in_home(self, tmp_path: Path) -> None:
        """The default local backend keeps its 0600 KEK file in <home>/secrets."""
        home = Home(tmp_path / "home")
        config = load_config(home=home)
        build_secret_backend(config.secrets, home)
        assert oct(os.stat(home.kek_key).st_mode & 0o777) == "0o600"

    def test_kms_wrapper_is_named_by_key(self, tmp_path: Path) -> None:
        """The KMS wrapper's name (stored beside each envelope) is the configured key."""
        text = "local:\n  key_wrapper: kms\naws:\n  region: us-east-1\n  kms_key_id: alias/x\n"
        config = load_config(home=Home(tmp_path), config_file=write(tmp_path, text))
        assert config.secrets.aws is not None
        wrapper = KmsKeyWrapper(aws_connection(config.secrets.aws), "alias/x")
        assert wrapper.name == "kms:alias/x"


class Refusing:
    """A backend whose every call fails with `error`."""

    name = "vault"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get(self, ref: SecretRef) -> bytes:
        raise self.error


class TestGuardedBackend:
    """The guard names the broker's own refusals and reports outages at once."""

    async def test_permission_denied_becomes_backend_permission_denied(self) -> None:
        """Vault refusing the broker is BackendPermissionDenied -> FAILED_PRECONDITION."""
        guard = GuardedBackend(Refusing(PermissionDenied("policy lacks read")))  # type: ignore[arg-type]
        with pytest.raises(BackendPermissionDenied, match="policy lacks read") as caught:
            await guard.get(SecretRef("vault", "p/r", "1"))
        assert status_for(caught.value) is grpc.StatusCode.FAILED_PRECONDITION

    async def test_unavailable_calls_the_listener(self) -> None:
        """A BackendUnavailable passes through and tells the listener (the health check)."""
        guard = GuardedBackend(Refusing(BackendUnavailable("down")))  # type: ignore[arg-type]
        told: list[bool] = []
        guard.on_unavailable = lambda: told.append(True)
        with pytest.raises(BackendUnavailable):
            await guard.get(SecretRef("vault", "p/r", "1"))
        assert told == [True]
