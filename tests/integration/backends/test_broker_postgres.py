"""The broker on PostgreSQL through its gRPC API: PostgreSQL stopped under a running broker
and started again (degrade, don't die), and the connection string never in a log line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from pullbroker_client.broker import BrokerCallError, BrokerClient
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_service.api.server import PULL_SERVICE, STORE_HEALTH

from tests.harness.broker_config import TEST_SETTINGS
from tests.harness.canary import find_in_text
from tests.harness.postgres import PostgresServer
from tests.harness.process import eventually
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.backends.conftest import write_secret_file
from tests.integration.backends.test_broker_backends import (
    NOT_SERVING,
    SERVING,
    InProcessBroker,
    broker_config,
    generic,
    login,
    manifest_status,
)

pytestmark = pytest.mark.integration
# Trust authentication ignores it, so it can be a canary: it must never reach a log line.
PASSWORD = "pg-canary-5f0c2a9e77d1"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: its tests stop and start it."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


def write_config(folder: Path, server: PostgresServer) -> Path:
    """Local secret backend, metadata and envelopes in a fresh database; the connection
    string (with a password) in a 0600 file, as an operator would mount it."""
    folder.mkdir(parents=True, exist_ok=True)
    dsn = f"{server.dsn(server.create_database()).reveal()} password={PASSWORD}"
    write_secret_file(folder / "database-url", Secret(dsn))
    data = {
        **TEST_SETTINGS,
        "database": {"url_file": "database-url", "acquire_timeout_seconds": 1},
    }
    path = folder / "broker.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class TestDatabaseOutage:
    """PostgreSQL down: calls that need it are UNAVAILABLE with a retry hint, cached tokens
    are still served, health "pullbroker.store" says NOT_SERVING; back up: SERVING again
    without a restart, and nothing half-written."""

    def test_stop_and_start_under_traffic(
        self,
        own_postgres: PostgresServer,
        tmp_path: Path,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """Stop PostgreSQL under a running broker, then start it again."""
        image = pushed_images.app.reference
        path = write_config(tmp_path / "etc", own_postgres)
        broker = InProcessBroker(broker_config(Home(tmp_path / "home"), path))
        try:
            with broker.client() as admin, broker.client("node") as node:
                admin.create_registry(generic("team", token_registry), login(token_registry, ALICE))
                cached = node.issue_pull_token(image)
                assert broker.health(STORE_HEALTH) == SERVING
                own_postgres.stop()
                try:
                    self._while_down(broker, admin, node, token_registry, image, cached.token)
                finally:
                    own_postgres.start()
                eventually(lambda: broker.health(STORE_HEALTH) == SERVING, "SERVING again")
                assert broker.health("") == SERVING
                other = admin.create_registry(
                    generic("other", token_registry, "other/*"), login(token_registry, BOB)
                )
                fresh = node.issue_pull_token(image, registry=other.name)
                assert manifest_status(token_registry, fresh.token, "team/app") == 200
                names = [r.display_name for r in admin.iter_registries()]
                assert names == ["team", "other"], "the refused create left nothing behind"
        finally:
            broker.stop()
        assert not find_in_text(broker.home.broker_log.read_text(), PASSWORD)

    def _while_down(
        self,
        broker: InProcessBroker,
        admin: BrokerClient,
        node: BrokerClient,
        token_registry: TokenAuthRegistry,
        image: str,
        cached: Secret,
    ) -> None:
        assert node.issue_pull_token(image).token.reveal() == cached.reveal(), "cached token"
        for call in (
            lambda: admin.create_registry(
                generic("other", token_registry, "other/*"), login(token_registry, BOB)
            ),
            lambda: list(admin.iter_registries()),
        ):
            with pytest.raises(BrokerCallError) as caught:
                call()
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            assert caught.value.retry_after is not None
            assert PASSWORD not in str(caught.value)
        eventually(lambda: broker.health(STORE_HEALTH) == NOT_SERVING, "NOT_SERVING")
        assert broker.health("") == NOT_SERVING
        assert broker.health(PULL_SERVICE) == SERVING, "cached tokens are still served"
