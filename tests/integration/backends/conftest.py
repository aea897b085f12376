"""Real secret-backend servers for the backend tests: OpenBao (dev and raft+TLS) and moto.

Servers are session-scoped; each test gets adapters of its own under a fresh prefix, so the
tests never see each other's secrets. Vault is provisioned like production: KV v2, a policy
limited to the `pullbroker/` prefix, AppRole, and a derived transit key.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import hvac
import hvac.exceptions
import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.secrets.aws import AwsConnection
from pullbroker_service.secrets.vault_auth import (
    AppRoleAuth,
    FileSource,
    VaultConnection,
    VaultSession,
)

from tests.harness.certs import TestCA
from tests.harness.moto_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.harness.openbao import BaoProcess, OpenBaoDev, OpenBaoRaft

POLICY_NAME = "pullbroker"
TRANSIT_KEY = "pullbroker"
KMS_ALIAS = "alias/pullbroker-test"
# What the broker's Vault identity may do: its KV prefix, its transit key, nothing else.
POLICY = f"""
path "secret/data/pullbroker/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/pullbroker/*" {{ capabilities = ["read", "list", "delete"] }}
path "secret/destroy/pullbroker/*" {{ capabilities = ["update"] }}
path "kvcas/data/pullbroker/*" {{ capabilities = ["create", "read", "update"] }}
path "kvcas/metadata/pullbroker/*" {{ capabilities = ["read", "list", "delete"] }}
path "transit/keys/{TRANSIT_KEY}" {{ capabilities = ["read"] }}
path "transit/datakey/plaintext/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/decrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
"""


def write_secret_file(path: Path, value: Secret) -> Path:
    """A 0600 credential file, as an operator or an agent would provide it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value.reveal() + "\n")
    return path


@dataclass
class VaultWorld:
    """A provisioned OpenBao server and where its AppRole credentials are."""

    server: BaoProcess
    role_id_file: Path
    secret_id_file: Path
    workdir: Path

    def connection(self, **overrides: Any) -> VaultConnection:
        settings: dict[str, Any] = {"url": self.server.url, "ca_file": self.server.ca_file}
        return VaultConnection(**{**settings, **overrides})

    def approle_session(self) -> VaultSession:
        auth = AppRoleAuth(FileSource(self.role_id_file), FileSource(self.secret_id_file))
        return VaultSession(self.connection(), auth)

    def root(self) -> hvac.Client:
        return self.server.client()

    def new_secret_id(self, role: str) -> Secret:
        resp = self.root().auth.approle.generate_secret_id(role_name=role)
        return Secret(resp["data"]["secret_id"])

    def role_id(self, role: str) -> Secret:
        return Secret(self.root().auth.approle.read_role_id(role_name=role)["data"]["role_id"])


def enable_kv2(client: hvac.Client, mount: str) -> None:
    """Mount KV v2 and wait out its "upgrading to versioned data" phase (raft storage)."""
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    deadline = time.monotonic() + 15
    while True:
        try:
            client.secrets.kv.v2.read_configuration(mount_point=mount)
            return
        except hvac.exceptions.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def provision(server: BaoProcess, workdir: Path, *, enable_kv: bool) -> VaultWorld:
    client = server.client()
    if enable_kv:  # dev mode mounts KV v2 at secret/ already
        enable_kv2(client, "secret")
    enable_kv2(client, "kvcas")
    client.secrets.kv.v2.configure(cas_required=True, mount_point="kvcas")
    client.sys.enable_secrets_engine("transit")
    client.secrets.transit.create_key(name=TRANSIT_KEY, derived=True)
    client.sys.create_or_update_policy(name=POLICY_NAME, policy=POLICY)
    client.sys.enable_auth_method("approle")
    client.auth.approle.create_or_update_approle(
        role_name="pullbroker", token_policies=[POLICY_NAME], token_ttl="1h"
    )
    world = VaultWorld(server, workdir / "role_id", workdir / "secret_id", workdir)
    write_secret_file(world.role_id_file, world.role_id("pullbroker"))
    write_secret_file(world.secret_id_file, world.new_secret_id("pullbroker"))
    return world


@pytest.fixture(scope="session")
def backends_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA that issues the OpenBao and moto server certificates."""
    return TestCA.create(tmp_path_factory.mktemp("backends-ca"), "pullbroker backends test CA")


@pytest.fixture(scope="session")
def vault_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultWorld]:
    """OpenBao in dev mode (plain HTTP, in memory), provisioned."""
    workdir = tmp_path_factory.mktemp("bao-dev")
    server = OpenBaoDev.start(workdir)
    try:
        yield provision(server, workdir, enable_kv=False)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vault_raft(
    tmp_path_factory: pytest.TempPathFactory, backends_ca: TestCA
) -> Iterator[VaultWorld]:
    """OpenBao with raft storage and a TLS listener, initialised, unsealed and provisioned."""
    workdir = tmp_path_factory.mktemp("bao-raft")
    server = OpenBaoRaft.start(workdir, backends_ca)
    try:
        yield provision(server, workdir, enable_kv=True)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory, backends_ca: TestCA) -> Iterator[MotoServer]:
    """A moto server over TLS (our CA) with a KMS key behind an alias."""
    server = MotoServer.start(tmp_path_factory.mktemp("moto"), backends_ca)
    try:
        create_kms_key(aws_connection(server))
        yield server
    finally:
        server.stop()


def aws_connection(server: MotoServer, **overrides: Any) -> AwsConnection:
    settings: dict[str, Any] = {
        "region": REGION,
        "endpoint_url": server.url,
        "ca_file": server.ca_file,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": Secret(SECRET_ACCESS_KEY),
        "max_attempts": 2,
        "connect_timeout": 2.0,
    }
    settings.update(overrides)
    return AwsConnection(**settings)


def create_kms_key(connection: AwsConnection, alias: str = KMS_ALIAS) -> str:
    """A symmetric KMS key named by `alias`; returns the key id."""
    kms = connection.client("kms")
    key_id = str(kms.create_key(Description="pullbroker test KEK")["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id


def raw_secretsmanager(server: MotoServer) -> Any:
    """A plain boto3 client for looking behind the adapter's back."""
    return boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=server.url,
        verify=str(server.ca_file),
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture
def prefix() -> str:
    """A fresh secret prefix under the policy's `pullbroker/`, so tests never collide."""
    return f"pullbroker/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raft_session(vault_raft: VaultWorld) -> AsyncIterator[VaultSession]:
    """An AppRole session against the raft server."""
    session = vault_raft.approle_session()
    yield session
    session.close()
