"""The real CNCF distribution registry (`docker-registry serve`) on a free 127.0.0.1 port.

TokenAuthRegistry  TLS + Bearer token auth against our TokenServer (Docker Hub, GHCR, ... style)
HtpasswdRegistry   TLS + Basic auth from a bcrypt htpasswd file
PlainRegistry      TLS, no auth
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from tests.harness.certs import TestCA
from tests.harness.grants import Grants
from tests.harness.jwt_signer import KeyIdMode
from tests.harness.process import HarnessError, free_port, log_tail, require_tool, spawn, stop
from tests.harness.token_server import TokenServer

_READY_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3


class Registry:
    """Common lifecycle: write config.yml, start, wait for /v2/, stop by PID."""

    kind = "plain"

    def __init__(self, workdir: Path | None = None, ca: TestCA | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="pb-registry-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or TestCA.create(self.workdir / "ca", "registry test CA")
        self.storage_dir = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.users: dict[str, str] = {}
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        cert = self.ca.issue(f"registry-{id(self):x}", dns=["localhost"], ips=["127.0.0.1"])
        self._cert, self._key = cert.cert_path, cert.key_path
        self.ca_dir = self.workdir / "certs.d"
        self.ca_dir.mkdir(exist_ok=True)
        (self.ca_dir / "ca.crt").write_text(self.ca.pem)

    # -- facts tests use -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """127.0.0.1:PORT (what image references and credential helpers use)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """https://127.0.0.1:PORT"""
        return f"https://{self.host}"

    @property
    def ca_pem(self) -> str:
        """The CA that signed the registry's certificate."""
        return self.ca.pem

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the test CA (never the environment)."""
        return ssl.create_default_context(cadata=self.ca.pem)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start `docker-registry serve` and wait until it answers /v2/."""
        binary = require_tool("docker-registry")
        self._before_start()
        for attempt in range(_PORT_ATTEMPTS):
            self.port = self.port if (self.port and attempt == 0) else free_port()
            config = self.workdir / "config.yml"
            config.write_text(json.dumps(self._config()))  # JSON is valid YAML
            self._proc = spawn([binary, "serve", str(config)], log_path=self.log_path)
            if self._wait_ready():
                return self
            stop(self._proc)
            self._proc = None
        raise HarnessError(
            f"docker-registry did not become ready on {self.host}:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the registry process (idempotent); remove the workdir if we made it."""
        stop(self._proc)
        self._proc = None
        self._after_stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping storage (re-reads config files)."""
        stop(self._proc)
        self._proc = None
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The registry's PID while it runs."""
        return None if self._proc is None else self._proc.pid

    def _before_start(self) -> None:
        """Hook: subclasses prepare auth files."""

    def _after_stop(self) -> None:
        """Hook: subclasses stop helpers."""

    def _auth_config(self) -> dict[str, Any]:
        return {}

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{self.port}",
                "secret": "harness-http-secret",
                "tls": {"certificate": str(self._cert), "key": str(self._key)},
            },
        }
        auth = self._auth_config()
        if auth:
            config["auth"] = auth
        return config

    def _wait_ready(self) -> bool:
        ctx = self.ssl_context()
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=2)
            try:
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                return True
            except (OSError, http.client.HTTPException):
                time.sleep(0.02)
            finally:
                conn.close()
        return False

    # -- storage access --------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        algorithm, _, hexdigest = digest.partition(":")
        return (
            self.storage_dir / "docker/registry/v2/blobs" / algorithm / hexdigest[:2]
            / hexdigest / "data"
        )  # fmt: skip

    def corrupt_blob(self, repository: str, digest: str) -> None:
        """Flip the stored bytes of a pushed blob so the registry serves wrong content.

        The size is kept so clients see the advertised length and must detect the
        mismatch by digest.
        """
        link = (
            self.storage_dir / "docker/registry/v2/repositories" / repository
            / "_layers" / digest.replace(":", "/") / "link"
        )  # fmt: skip
        path = self.blob_path(digest)
        if not path.exists():
            raise HarnessError(f"blob {digest} is not in the registry storage")
        if not link.exists() and not _is_manifest_of(self, repository, digest):
            raise HarnessError(f"blob {digest} is not linked into {repository}")
        data = bytearray(path.read_bytes())
        for i in range(0, len(data), max(1, len(data) // 64)):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))


def _is_manifest_of(registry: Registry, repository: str, digest: str) -> bool:
    revisions = (
        registry.storage_dir / "docker/registry/v2/repositories" / repository
        / "_manifests/revisions" / digest.replace(":", "/")
    )  # fmt: skip
    return revisions.exists()


class PlainRegistry(Registry):
    """TLS, no authentication."""


class TokenAuthRegistry(Registry):
    """TLS + Bearer token auth, tokens from an in-process TokenServer sharing the test CA."""

    kind = "token"

    def __init__(
        self,
        workdir: Path | None = None,
        ca: TestCA | None = None,
        *,
        service: str = "test-registry",
        issuer: str = "test-issuer",
        token_ttl: float = 300.0,
        key_id_mode: KeyIdMode = "x5c",
    ) -> None:
        super().__init__(workdir, ca)
        self.token_server = TokenServer(
            self.ca, service=service, issuer=issuer, ttl=token_ttl, key_id_mode=key_id_mode
        )
        self.service = service
        self.issuer = issuer

    def add_user(self, name: str, password: str, grants: Grants) -> None:
        """Create or replace a user with repository-glob grants, e.g. {"team/*": ["pull"]}."""
        self.users[name] = password
        self.token_server.add_user(name, password, grants)

    def set_password(self, name: str, password: str) -> None:
        """Rotate a user's password at the token server."""
        self.users[name] = password
        self.token_server.set_password(name, password)

    def set_anonymous_grants(self, grants: Grants) -> None:
        """Anonymous pull rights, e.g. {"public/*": ["pull"]}."""
        self.token_server.set_anonymous_grants(grants)

    def _before_start(self) -> None:
        if not self.token_server.running:
            self.token_server.start()

    def _after_stop(self) -> None:
        self.token_server.stop()

    def _auth_config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.token_server.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.token_server.signer.bundle_path),
            }
        }


class HtpasswdRegistry(Registry):
    """TLS + Basic auth (bcrypt htpasswd); the registry reads the file at start."""

    kind = "htpasswd"

    def __init__(
        self,
        workdir: Path | None = None,
        ca: TestCA | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, ca)
        self.htpasswd_path = self.workdir / "htpasswd"
        for name, password in (users or {}).items():
            self.add_user(name, password)

    def add_user(self, name: str, password: str, grants: Grants | None = None) -> None:
        """Add a Basic user (grants are ignored: htpasswd users may do anything)."""
        htpasswd = require_tool("htpasswd")
        create = [] if self.htpasswd_path.exists() else ["-c"]
        # -i reads the password from stdin so it never shows on a command line.
        subprocess.run(
            [htpasswd, "-B", "-i", *create, str(self.htpasswd_path), name],
            input=password.encode(),
            check=True,
            capture_output=True,
        )
        self.users[name] = password
        if self._proc is not None:
            self.restart()

    def _before_start(self) -> None:
        if not self.htpasswd_path.exists():
            # distribution invents a user when the file is missing; an empty file means none.
            self.htpasswd_path.touch(mode=0o600)

    def _auth_config(self) -> dict[str, Any]:
        return {"htpasswd": {"realm": "pullbroker-test", "path": str(self.htpasswd_path)}}
