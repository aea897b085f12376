"""The broker, in-process, on each secret backend (local, OpenBao raft+TLS with AppRole, AWS
Secrets Manager + KMS on moto over TLS), configured by a real config file: the whole life of
a registry through the gRPC API, no plaintext credential anywhere, and degrade-don't-die.

The helpers here (config files, an in-process broker on a given home, health checks, pausing
moto) are shared with test_broker_faults.py and test_broker_migrate.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, BrokerClient, BrokerTarget, basic_credential
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_client.tls import TlsFiles, channel_credentials
from pullbroker_service.api.server import PULL_SERVICE, SECRETS_HEALTH
from pullbroker_service.bootstrap.main import Broker, start_broker
from pullbroker_service.config.broker import BrokerConfig, load_config
from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.secrets.factory import GuardedBackend

from tests.harness.broker_config import TEST_SETTINGS
from tests.harness.canary import find_in_text, find_in_tree
from tests.harness.images import OCI_INDEX, OCI_MANIFEST
from tests.harness.moto_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.harness.openbao import OpenBaoRaft
from tests.harness.process import eventually
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.backends.conftest import KMS_ALIAS, VaultWorld, write_secret_file

pytestmark = pytest.mark.integration
T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BACKENDS = ["local", "vault", "aws"]
ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}"


def write_config(
    folder: Path,
    backend: str,
    *,
    prefix: str,
    vault: VaultWorld | None = None,
    moto: MotoServer | None = None,
) -> Path:
    """A broker config file naming `backend`, with a section for every server given; the
    backends' own credentials are in 0600 files next to it, as an operator would keep them."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"secret_backend": backend, **TEST_SETTINGS}
    if vault is not None:
        data["vault"] = {
            "url": vault.server.url,
            "ca_file": str(vault.server.ca_file),
            "prefix": prefix,
            "timeout_seconds": 3,
            "auth": {
                "method": "approle",
                "role_id_file": str(vault.role_id_file),
                "secret_id_file": str(vault.secret_id_file),
            },
        }
    if moto is not None:
        write_secret_file(folder / "aws-key-id", Secret(ACCESS_KEY_ID))
        write_secret_file(folder / "aws-secret-key", Secret(SECRET_ACCESS_KEY))
        data["aws"] = {
            "region": REGION,
            "kms_key_id": KMS_ALIAS,
            "endpoint_url": moto.url,
            "ca_file": str(moto.ca_file),
            "prefix": prefix,
            "recovery_window_days": 0,
            "access_key_id_file": "aws-key-id",
            "secret_access_key_file": "aws-secret-key",
            # Fault tests stop moto (SIGSTOP): a call then fails after one short timeout.
            "connect_timeout_seconds": 1,
            "read_timeout_seconds": 1,
            "max_attempts": 1,
        }
    path = folder / f"broker-{backend}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def broker_config(home: Home, config_file: Path, **overrides: Any) -> BrokerConfig:
    config = load_config(home=home, config_file=config_file, listen="127.0.0.1:0")
    settings: dict[str, Any] = {
        "log_to_stderr": False,
        "shutdown_grace_seconds": 0.5,
        "backend_check_interval_seconds": 0.2,
    }
    return replace(config, **{**settings, **overrides})


class InProcessBroker:
    """start_broker() on an event loop of its own thread; `run` executes on that loop."""

    def __init__(self, config: BrokerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.broker: Broker = self.run(start_broker(config), timeout=30)
        except BaseException:
            self._close_loop()
            raise
        self.home = config.home

    @property
    def address(self) -> str:
        return self.broker.address

    @property
    def secrets(self) -> GuardedBackend:
        assert self.broker.secrets is not None
        return self.broker.secrets

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def client(self, role: str = "admin") -> BrokerClient:
        return BrokerClient(BrokerTarget(self.address, TlsFiles.from_home(self.home, role)))

    def health(self, service: str = "") -> int:
        credentials = channel_credentials(TlsFiles.from_home(self.home, "node"))
        with grpc.secure_channel(self.address, credentials) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            status: int = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status
            return status

    def stop(self) -> None:
        try:
            self.run(self.broker.stop(0.5), timeout=30)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def pause(moto: MotoServer) -> None:
    """Stop the moto process (SIGSTOP): it keeps its state, and calls hang until they time
    out, as with a backend that stopped answering."""
    os.kill(moto.pid, signal.SIGSTOP)


def resume(moto: MotoServer) -> None:
    os.kill(moto.pid, signal.SIGCONT)


async def until_available(backend: GuardedBackend) -> None:
    """Wait until the backend answers again (a restarted server, pooled dead connections)."""
    deadline = time.monotonic() + 30.0
    while True:
        try:
            await backend.check()
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def raft(world: VaultWorld) -> OpenBaoRaft:
    """The raft server of `vault_raft` (its data survives a kill and restart)."""
    assert isinstance(world.server, OpenBaoRaft)
    return world.server


def generic(name: str, registry: TokenAuthRegistry, *globs: str) -> Any:
    """A generic record on the harness registry; a second record for the same host needs
    repository `globs` to tell it apart (a record named in a pull serves it regardless)."""
    return registry_pb2.Registry(
        display_name=name,
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=registry.url,
        registry_ca_pem=registry.ca_pem,
        repositories=list(globs),
    )


def login(registry: TokenAuthRegistry, user: str) -> Any:
    return basic_credential(user, Secret(registry.users[user]))


def manifest_status(registry: TokenAuthRegistry, token: Secret, repository: str) -> int:
    headers = {"Authorization": f"Bearer {token.reveal()}", "Accept": ACCEPT}
    with httpx.Client(verify=registry.ssl_context(), trust_env=False, timeout=10) as http:
        return http.get(f"{registry.url}/v2/{repository}/manifests/v1", headers=headers).status_code


@pytest.fixture(params=BACKENDS)
def configured(
    request: pytest.FixtureRequest, prefix: str, tmp_path: Path
) -> tuple[str, Path, VaultWorld | None, MotoServer | None]:
    """(backend, its config file, the OpenBao world if vault, the moto server if aws)."""
    backend: str = request.param
    vault: VaultWorld | None = request.getfixturevalue("vault_raft") if backend == "vault" else None
    moto: MotoServer | None = request.getfixturevalue("moto") if backend == "aws" else None
    path = write_config(tmp_path / "etc", backend, prefix=prefix, vault=vault, moto=moto)
    return backend, path, vault, moto


@pytest.fixture
def running(
    configured: tuple[str, Path, VaultWorld | None, MotoServer | None], tmp_path: Path
) -> Iterator[InProcessBroker]:
    """A broker on the configured backend, stopped afterwards."""
    broker = InProcessBroker(broker_config(Home(tmp_path / "home"), configured[1]))
    try:
        yield broker
    finally:
        broker.stop()


class TestLifecycleOnEachBackend:
    """Create (tested), test, issue, rotate, roll back, delete: the same through the API on
    every backend."""

    def test_whole_life(
        self,
        running: InProcessBroker,
        configured: tuple[str, Path, VaultWorld | None, MotoServer | None],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """The token minted from each backend's credential pulls; a rotation keeps the new
        version and the one it replaced; a rollback makes that one current again (and pulls)
        and leaves only it; a delete removes the secret; no file or log holds a password."""
        backend = configured[0]
        with running.client() as admin, running.client("node") as node:
            created = admin.create_registry(
                generic("team", token_registry), login(token_registry, ALICE), True
            )
            assert running.health(SECRETS_HEALTH) == SERVING
            probe = admin.test_connection(created.name, repository="team/app")
            assert probe.outcome == registry_pb2.CONNECTION_OUTCOME_OK, probe.message
            registry_id = created.name.removeprefix("registries/")
            (created_version,) = running.run(running.secrets.list_versions(registry_id))
            first = node.issue_pull_token(pushed_images.app.reference)
            assert manifest_status(token_registry, first.token, "team/app") == 200
            target = registry_pb2.Registry(name=created.name, etag=created.etag)
            rotated = admin.update_registry(target, [], login(token_registry, BOB))
            assert (rotated.credential_version, rotated.username) == (2, BOB)
            second = node.issue_pull_token(pushed_images.app.reference)
            assert second.token.reveal() != first.token.reveal()
            assert manifest_status(token_registry, second.token, "team/app") == 200
            versions = {ref for ref, _ in running.run(running.secrets.list_versions(registry_id))}
            assert {ref.backend for ref in versions} == {backend}
            assert versions > {created_version[0]}, "the new version, and the old for a rollback"
            assert len(versions) == 2
            rolled = admin.rollback_registry(rotated.name, rotated.etag)
            assert (rolled.credential_version, rolled.username) == (3, ALICE)
            third = node.issue_pull_token(pushed_images.app.reference)
            assert third.token.reveal() != second.token.reveal(), "bob's token was dropped"
            assert manifest_status(token_registry, third.token, "team/app") == 200
            left = [ref for ref, _ in running.run(running.secrets.list_versions(registry_id))]
            assert left == [created_version[0]], "the rolled-back version is gone"
            with pytest.raises(BrokerCallError) as nothing_left:
                admin.rollback_registry(rolled.name, rolled.etag)
            assert nothing_left.value.code is grpc.StatusCode.FAILED_PRECONDITION
            admin.delete_registry(created.name)
            assert registry_id not in running.run(running.secrets.list_keys())
            with pytest.raises(BrokerCallError) as caught:
                admin.delete_registry(created.name)
            assert caught.value.code is grpc.StatusCode.NOT_FOUND
        out, err = capfd.readouterr()
        _, _, vault, moto = configured
        servers = [w.workdir for w in (vault, moto) if w is not None]  # their logs, raft data
        for user in (ALICE, BOB):
            password = token_registry.users[user]
            for root in (running.home.root, *servers):
                assert find_in_tree(root, password) == [], root
            for text in (running.home.broker_log.read_text(), out, err):
                assert not find_in_text(text, password)


class TestDegradeDontDie:
    """Backend down: credential calls are UNAVAILABLE with a retry hint, cached tokens are
    still served, health says NOT_SERVING; back up: SERVING again, no restart needed."""

    def test_vault_outage_and_recovery(
        self,
        vault_raft: VaultWorld,
        prefix: str,
        tmp_path: Path,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """Kill OpenBao under a running broker, then start it again."""
        image = pushed_images.app.reference
        path = write_config(tmp_path / "etc", "vault", prefix=prefix, vault=vault_raft)
        broker = InProcessBroker(broker_config(Home(tmp_path / "home"), path))
        try:
            with broker.client() as admin, broker.client("node") as node:
                admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
                cached = node.issue_pull_token(image)
                raft(vault_raft).kill()
                try:
                    self._while_down(broker, admin, node, token_registry, image, cached.token)
                finally:
                    raft(vault_raft).restart()
                eventually(lambda: broker.health(SECRETS_HEALTH) == SERVING, "SERVING again")
                assert broker.health("") == SERVING
                other = admin.create_registry(
                    generic("other", token_registry, "other/*"), login(token_registry, BOB)
                )
                fresh = node.issue_pull_token(image, registry=other.name)
                assert manifest_status(token_registry, fresh.token, "team/app") == 200
        finally:
            broker.stop()

    def _while_down(
        self,
        broker: InProcessBroker,
        admin: BrokerClient,
        node: BrokerClient,
        token_registry: TokenAuthRegistry,
        image: str,
        cached: Secret,
    ) -> None:
        eventually(lambda: broker.health(SECRETS_HEALTH) == NOT_SERVING, "NOT_SERVING")
        assert broker.health("") == NOT_SERVING
        assert broker.health(PULL_SERVICE) == SERVING, "cached tokens are still served"
        assert node.issue_pull_token(image).token.reveal() == cached.reveal()
        for call in (
            lambda: node.issue_pull_token(image, force_refresh=True),
            lambda: admin.create_registry(
                generic("other", token_registry, "other/*"), login(token_registry, BOB)
            ),
        ):
            with pytest.raises(BrokerCallError) as caught:
                call()
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            assert caught.value.retry_after is not None
        assert [r.display_name for r in admin.iter_registries()] == ["team"], "nothing half-made"
