"""Secret backends: our adapter and the broker's use cases next to the raw client doing the
same storage operation.

For local (SQLite + AES-GCM envelopes), vault (OpenBao dev server, hvac) and aws (moto
server, boto3), measure ops/s of create, read and rotate three ways, in the same run,
interleaved, median of several rounds:

- adapter: the SecretBackend alone (put; get; put then delete_version of the old one);
- broker:  the use cases over the adapter and the SQLite metadata store, as the broker runs
  them: Registries.create (PENDING record, put, READY), TokenIssuer.issue with
  force_refresh (a token cache miss: record lookup, policy, credential read and decode, a
  mint by a minter that answers at once, the `token_issued` log line), and
  Registries.update with a new credential (put, etag-checked switch, old version deleted);
- raw:     the backend's own client doing the same storage operations (create; read; a new
  version, then the old one retired: a KV destroy, the AWSPREVIOUS label taken off, a row
  deleted).

Overheads are raw ops/s / ours; the issue's target is at most 1.25x.

Usage: python -m bench backends     (or: python -m bench.backend_bench)
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import hvac
import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pullbroker_client.secret import Secret
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    Credential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
    SecretRef,
)
from pullbroker_service.domain.policy import Policy
from pullbroker_service.infra.logging import configure_logging
from pullbroker_service.minting.base import ProbeResult, pull_scope
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.aws import AwsConnection
from pullbroker_service.secrets.factory import (
    BrokerAwsBackend,
    BrokerVaultBackend,
    GuardedBackend,
    VersionedBackend,
)
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.vault_auth import (
    EnvSource,
    TokenAuth,
    VaultConnection,
    VaultSession,
)
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.harness.moto_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.harness.openbao import OpenBaoDev

ROUNDS = 7
CHUNK = 5
OPS = {"local": 60, "vault": 30, "aws": 25}
TARGET = 1.25
VALUE = b'{"kind":"basic","username":"bench","password":"' + b"p" * 40 + b'"}'
OPERATIONS = ("create", "read", "rotate")
ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))
NODE = Identity("spiffe://pullbroker.local/node/bench", frozenset({"node"}))
POLICY = Policy.from_mapping(
    {
        "rules": [
            {"identity": NODE.name, "roles": ["node"], "registries": ["*"], "repositories": ["**"]}
        ]
    }
)
_TOKEN_VAR = "PULLBROKER_BENCH_VAULT_TOKEN"


Handle = tuple[str, Any]  # (where, version) as the raw client names a stored version


class RawClient:
    """The same storage operations without our adapter: create, read, and rotate (a new
    version, then the superseded one retired, as a rotation through the broker does)."""

    def create(self, key: str) -> Handle:
        raise NotImplementedError

    def read(self, handle: Handle) -> bytes:
        raise NotImplementedError

    def rotate(self, key: str, old: Handle) -> Handle:
        raise NotImplementedError


class RawVault(RawClient):
    def __init__(self, client: hvac.Client, prefix: str) -> None:
        self._kv = client.secrets.kv.v2
        self._prefix = prefix

    def create(self, key: str) -> Handle:
        return self._write(key)

    def rotate(self, key: str, old: Handle) -> Handle:
        new = self._write(key)  # KV v2: a write to an existing path is a new version
        self._kv.destroy_secret_versions(path=old[0], versions=[old[1]])
        return new

    def _write(self, key: str) -> Handle:
        path = f"{self._prefix}/{key}"
        secret = {"value": base64.b64encode(VALUE).decode()}
        version = self._kv.create_or_update_secret(path=path, secret=secret)["data"]["version"]
        return path, version

    def read(self, handle: Handle) -> bytes:
        path, version = handle
        resp = self._kv.read_secret_version(
            path=path, version=version, raise_on_deleted_version=True
        )
        return base64.b64decode(resp["data"]["data"]["value"])


class RawAws(RawClient):
    def __init__(self, client: Any, prefix: str, kms_key_id: str) -> None:
        self._sm = client
        self._prefix = prefix
        self._kms = kms_key_id

    def create(self, key: str) -> Handle:
        resp = self._sm.create_secret(
            Name=f"{self._prefix}/{key}",
            SecretBinary=VALUE,
            KmsKeyId=self._kms,
            Tags=[{"Key": "pullbroker:registry-id", "Value": key}],
        )
        return resp["ARN"], resp["VersionId"]

    def rotate(self, key: str, old: Handle) -> Handle:
        resp = self._sm.put_secret_value(SecretId=f"{self._prefix}/{key}", SecretBinary=VALUE)
        # The new version is AWSCURRENT and the old one AWSPREVIOUS: take that label off.
        self._sm.update_secret_version_stage(
            SecretId=old[0], VersionStage="AWSPREVIOUS", RemoveFromVersionId=old[1]
        )
        return resp["ARN"], resp["VersionId"]

    def read(self, handle: Handle) -> bytes:
        arn, version = handle
        return bytes(self._sm.get_secret_value(SecretId=arn, VersionId=version)["SecretBinary"])


class RawLocal(RawClient):
    """sqlite3 + AESGCM doing what the envelope store does: version counter, fresh data key
    wrapped by the KEK, value encrypted with AAD, one row per version."""

    def __init__(self, path: Path) -> None:
        self._kek = AESGCM(AESGCM.generate_key(bit_length=256))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            "CREATE TABLE v (key TEXT PRIMARY KEY, last INTEGER NOT NULL);"
            "CREATE TABLE e (key TEXT, version INTEGER, wrapped BLOB, nonce BLOB, ct BLOB,"
            " created TEXT, PRIMARY KEY (key, version));"
        )

    def create(self, key: str) -> Handle:
        (version,) = self._db.execute(
            "INSERT INTO v VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET last = last + 1 "
            "RETURNING last",
            (key,),
        ).fetchone()
        data_key, aad = AESGCM.generate_key(bit_length=256), key.encode()
        knonce, nonce = os.urandom(12), os.urandom(12)
        wrapped = knonce + self._kek.encrypt(knonce, data_key, aad)
        ct = AESGCM(data_key).encrypt(nonce, VALUE, f"{key}/{version}".encode())
        self._db.execute(
            "INSERT INTO e VALUES (?, ?, ?, ?, ?, ?)",
            (key, version, wrapped, nonce, ct, datetime.now(UTC).isoformat()),
        )
        return key, version

    def rotate(self, key: str, old: Handle) -> Handle:
        new = self.create(key)
        self._db.execute("DELETE FROM e WHERE key = ? AND version = ?", old)
        return new

    def read(self, handle: Handle) -> bytes:
        key, version = handle
        wrapped, nonce, ct = self._db.execute(
            "SELECT wrapped, nonce, ct FROM e WHERE key = ? AND version = ?", (key, version)
        ).fetchone()
        data_key = self._kek.decrypt(wrapped[:12], wrapped[12:], key.encode())
        return AESGCM(data_key).decrypt(nonce, ct, f"{key}/{version}".encode())


class InstantMinter:
    """Mints at once: the broker's own cost of a cache miss, without a registry round trip."""

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        now = datetime.now(UTC)
        token = Secret("bench-token-" + registry.id)
        return MintedToken(AuthKind.BEARER, "", token, pull_scope(repository), now, now, repository)

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        return ProbeResult("ok", "ok", 0.0, "bearer")


@dataclass
class Subject:
    """One backend: our adapter (made inside the event loop) and its raw peer."""

    name: str
    make_adapter: Callable[[str], VersionedBackend]
    """An adapter storing under its own name: a file or a prefix per label."""
    raw: RawClient


@dataclass
class Broker:
    """The broker's use cases over a backend and a metadata store of their own."""

    registries: Registries
    issuer: TokenIssuer
    store: SqliteMetadataStore

    @classmethod
    def over(cls, backend: VersionedBackend, db: Path) -> Broker:
        store = SqliteMetadataStore(db)
        secrets = GuardedBackend(backend)
        minters = MintersByKind.with_bearer(InstantMinter())
        cache = TokenCache()
        return cls(
            Registries(store, secrets, minters, cache),
            TokenIssuer(store, secrets, minters, cache, StaticPolicy(POLICY)),
            store,
        )


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


Side = Callable[[int], Awaitable[object] | object]


async def _phase(n: int, sides: list[Side]) -> list[float]:
    """ops/s of each side, interleaved in small chunks (rotating who goes first) so the drift
    of a shared 2-core machine hits all alike. A side returning a coroutine is awaited."""
    spent = [0.0] * len(sides)
    for chunk, first in enumerate(range(0, n, CHUNK)):
        indices = range(first, min(first + CHUNK, n))
        order = [(chunk + k) % len(sides) for k in range(len(sides))]
        for side in order:
            start = time.perf_counter()
            for i in indices:
                result = sides[side](i)
                if asyncio.iscoroutine(result):  # a type-cache lookup, unlike an ABC check
                    await result
            spent[side] += time.perf_counter() - start
    return [_rate(n, t) for t in spent]


def _credential(i: int) -> BasicCredential:
    return BasicCredential("bench", Secret(VALUE.decode()[-40:] + str(i)))


async def _round(
    backend: VersionedBackend, broker: Broker, raw: RawClient, n: int, tag: str
) -> list[list[float]]:
    """create, read, rotate on n fresh keys per side; rows: operation, columns: side."""
    keys = {side: [f"{side}{tag}-{i}" for i in range(n)] for side in ("a", "b", "r")}
    refs: dict[int, SecretRef] = {}
    records: dict[int, RegistryRecord] = {}
    handles: dict[int, Handle] = {}

    async def create(i: int) -> None:
        refs[i] = await backend.put(keys["a"][i], VALUE)

    def host(i: int) -> str:
        # One host per record: records of one host without globs would tie (refused).
        return f"{keys['b'][i]}.bench.example"

    async def broker_create(i: int) -> None:
        spec = RegistrySpec(keys["b"][i], RegistryKind.GENERIC, f"https://{host(i)}")
        records[i] = await broker.registries.create(ADMIN, spec, _credential(i), test=False)

    def raw_create(i: int) -> None:
        handles[i] = raw.create(keys["r"][i])

    async def rotate(i: int) -> None:
        old, refs[i] = refs[i], await backend.put(keys["a"][i], VALUE)
        await backend.delete_version(old)

    def raw_rotate(i: int) -> None:
        handles[i] = raw.rotate(keys["r"][i], handles[i])

    async def broker_read(i: int) -> None:
        image = f"{host(i)}/team/app"
        await broker.issuer.issue(NODE, image, records[i].resource_name, True)

    async def broker_rotate(i: int) -> None:
        record = records[i]
        records[i] = await broker.registries.update(
            ADMIN, record.resource_name, record.etag, display_name=None, registry_ca_pem=None,
            allow_basic_passthrough=None, credential=_credential(-i),
        )  # fmt: skip

    return [
        await _phase(n, [create, broker_create, raw_create]),
        await _phase(
            n, [lambda i: backend.get(refs[i]), broker_read, lambda i: raw.read(handles[i])]
        ),
        await _phase(n, [rotate, broker_rotate, raw_rotate]),
    ]


async def _measure(subject: Subject, n: int, work: Path) -> list[list[float]]:
    """Medians over the rounds: rows create/read/rotate, columns adapter/broker/raw."""
    backend = subject.make_adapter("ours")
    broker = Broker.over(subject.make_adapter("broker"), work / f"metadata-{subject.name}.db")
    await _round(backend, broker, subject.raw, CHUNK, "warm")  # connections, login, checks
    rounds = [await _round(backend, broker, subject.raw, n, str(r)) for r in range(ROUNDS)]
    await backend.close()
    await broker.store.close()
    return [
        [statistics.median(r[op][side] for r in rounds) for side in range(3)]
        for op in range(len(OPERATIONS))
    ]


def _print_table(rows: list[tuple[str, str, list[float]]]) -> None:
    print(
        f"{'backend':8} {'operation':9} {'adapter/s':>10} {'broker/s':>9} {'raw/s':>8} "
        f"{'adapter':>8} {'broker':>8}"
    )
    for name, op, (adapter, broker, raw) in rows:
        print(
            f"{name:8} {op:9} {adapter:10.0f} {broker:9.0f} {raw:8.0f} "
            f"{_ratio(raw, adapter):>8} {_ratio(raw, broker):>8}"
        )
    print(
        f"adapter, broker = raw ops/s / ours (median of {ROUNDS} rounds); target <= {TARGET}x "
        "(* = over).\nbroker read = a token cache miss: lookup, policy, credential read, an "
        "instant mint and\nthe token_issued log line; create/rotate also write the metadata "
        "store (SQLite) twice / once."
    )


def _ratio(raw: float, ours: float) -> str:
    ratio = raw / ours
    return f"{ratio:.2f}x" + ("*" if ratio > TARGET else " ")


def _subjects(work: Path, bao: OpenBaoDev, moto: MotoServer) -> list[Subject]:
    os.environ[_TOKEN_VAR] = bao.root_token.reveal()
    session = requests.Session()
    session.trust_env = False
    raw_vault = hvac.Client(url=bao.url, token=bao.root_token.reveal(), session=session)
    connection = AwsConnection(
        region=REGION,
        endpoint_url=moto.url,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=Secret(SECRET_ACCESS_KEY),
    )
    kms_key = connection.client("kms").create_key()["KeyMetadata"]["KeyId"]
    raw_sm = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=moto.url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    run = uuid.uuid4().hex[:8]
    vault_conn = VaultConnection(url=bao.url)
    return [
        Subject(
            "local",
            lambda label: LocalSecretBackend(
                work / f"{label}.db", FileKeyWrapper.open(work / "kek.key")
            ),
            RawLocal(work / "raw.db"),
        ),
        Subject(
            "vault",
            lambda label: BrokerVaultBackend(
                VaultSession(vault_conn, TokenAuth(EnvSource(_TOKEN_VAR))), prefix=f"{label}{run}"
            ),
            RawVault(raw_vault, f"raw{run}"),
        ),
        Subject(
            "aws",
            lambda label: BrokerAwsBackend(connection, kms_key_id=kms_key, prefix=f"{label}{run}"),
            RawAws(raw_sm, f"raw{run}", kms_key),
        ),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pb-backend-bench-") as tmp:
        work = Path(tmp)
        # As the broker logs: JSON lines to a file (the token_issued line is part of a miss).
        configure_logging(log_file=work / "broker.log", level="info", stderr=False)
        bao = OpenBaoDev.start(work / "bao")
        moto = MotoServer.start(work / "moto")
        try:
            rows: list[tuple[str, str, list[float]]] = []
            for subject in _subjects(work, bao, moto):
                measured = asyncio.run(_measure(subject, OPS[subject.name], work))
                rows += [(subject.name, op, m) for op, m in zip(OPERATIONS, measured, strict=True)]
        finally:
            os.environ.pop(_TOKEN_VAR, None)
            bao.stop()
            moto.stop()
    _print_table(rows)


if __name__ == "__main__":
    main()
