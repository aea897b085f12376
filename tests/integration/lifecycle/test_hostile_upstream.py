"""A token endpoint that echoes the credential it received, and one that answers nonsense, seen
through the whole broker: nothing of the credential reaches the node, the admin, the log,
stderr or the audit file, and every failed token request is audited with a typed error."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import grpc
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, BrokerClient, basic_credential
from pullbroker_client.secret import Secret
from pullbroker_service.infra.logging import configure_logging

from tests.harness.canary import find_in_text, new_canary
from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.unit.service.minting.test_hostile_upstream import Hostile, json_reply

pytestmark = pytest.mark.integration

USER = "robot"

# What the endpoint quotes back in its error message, given the Authorization it received.
ECHOES: dict[str, Callable[[str, str], str]] = {
    "authorization-header": lambda auth, pw: auth,
    "raw-password": lambda auth, pw: pw,
    "b64-user-password": lambda auth, pw: base64.b64encode(f"{USER}:{pw}".encode()).decode(),
    "b64-password": lambda auth, pw: base64.b64encode(pw.encode()).decode(),
    "form-encoded-password": lambda auth, pw: quote_plus(pw),
}


@pytest.fixture
def broker_log(tmp_path: Path) -> Iterator[Path]:
    """The broker's JSON log, to a file and to stderr, as bootstrap/main.py sets it up."""
    path = tmp_path / "broker.log"
    configure_logging(log_file=path, level="debug", stderr=True)
    try:
        yield path
    finally:
        configure_logging(log_file=None, stderr=False)


@pytest.fixture
def hostile(test_ca: TestCA) -> Iterator[Hostile]:
    hostile = Hostile(json_reply({}))
    server = HTTPSServer(hostile.handle, test_ca)
    hostile.server, hostile.ca_pem = server, test_ca.pem
    with server:
        yield hostile


def add_hostile(admin: BrokerClient, hostile: Hostile, password: str, *, test: bool = False) -> Any:
    assert hostile.server is not None
    record = registry_pb2.Registry(
        display_name="hostile",
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=hostile.server.url(),
        registry_ca_pem=hostile.ca_pem,
    )
    return admin.create_registry(record, basic_credential(USER, Secret(password)), test=test)


class TestEchoingEndpoint:
    """A token endpoint quoting the credential in its error body leaks it nowhere."""

    @pytest.mark.parametrize("echo", list(ECHOES), ids=list(ECHOES))
    def test_canary_appears_nowhere(
        self,
        make_lifecycle_broker: Callable[..., LifecycleBroker],
        hostile: Hostile,
        broker_log: Path,
        capfd: pytest.CaptureFixture[str],
        echo: str,
    ) -> None:
        """Node error, TestConnection answer, tested create, log, stderr, audit: all clean."""
        canary = new_canary("echo")
        password = f"{canary}/+ &="

        def reply(request: Request) -> Reply:
            quoted = ECHOES[echo](request.headers.get("authorization", ""), password)
            body = {"errors": [{"code": "BAD_REQUEST", "message": f"you sent {quoted}"}]}
            return json_reply(body, 400)(request)

        hostile.token_reply = reply
        broker = make_lifecycle_broker()
        assert hostile.server is not None
        image = f"127.0.0.1:{hostile.server.port}/team/app:1"
        seen: list[str] = []
        with broker.client() as admin, broker.client("node") as node:
            with pytest.raises(BrokerCallError) as tested:
                add_hostile(admin, hostile, password, test=True)
            seen.append(tested.value.message)
            created = add_hostile(admin, hostile, password)
            with pytest.raises(BrokerCallError) as issued:
                node.issue_pull_token(image)
            seen.append(issued.value.message)
            probe = admin.test_connection(name=created.name, repository="team/app")
            seen.append(probe.message)
        asked = [r for r in hostile.server.requests if r.path.startswith("/token")]
        # The credential was sent (so the echo holds it), and the failure was logged.
        assert any(r.authorization for r in asked)
        assert issued.value.code is grpc.StatusCode.UNKNOWN
        seen.append(json.dumps(broker.audit_events()))
        seen.append(broker_log.read_text())
        seen.append(capfd.readouterr().err)
        assert "BAD_REQUEST" in seen[1]  # the upstream's answer is still named
        assert "BAD_REQUEST" in seen[-2]  # and logged
        leaks = [i for i, text in enumerate(seen) if find_in_text(text, canary)]
        assert leaks == [], [seen[i] for i in leaks]


class TestNonsenseLifetimes:
    """Absurd token lifetimes give a typed answer and an audit event, never INTERNAL."""

    def test_nan_expires_in(
        self, make_lifecycle_broker: Callable[..., LifecycleBroker], hostile: Hostile
    ) -> None:
        """expires_in NaN: UNKNOWN with a message, and a FAILED token.issue event."""
        hostile.token_reply = json_reply(b'{"token": "tok-123456", "expires_in": NaN}')
        broker = make_lifecycle_broker()
        assert hostile.server is not None
        with broker.client() as admin, broker.client("node") as node:
            add_hostile(admin, hostile, new_canary("nan"))
            with pytest.raises(BrokerCallError) as issued:
                node.issue_pull_token(f"127.0.0.1:{hostile.server.port}/team/app:1")
        assert issued.value.code is grpc.StatusCode.UNKNOWN
        assert "expires_in" in issued.value.message
        events = [e for e in broker.audit_events() if e["action"] == "token.issue"]
        assert [(e["outcome"], e["repository"]) for e in events] == [("failed", "team/app")]

    def test_huge_expires_in_is_clamped(
        self, make_lifecycle_broker: Callable[..., LifecycleBroker], hostile: Hostile
    ) -> None:
        """expires_in 1e12: a token the node is told expires within the hour."""
        hostile.token_reply = json_reply({"token": "tok-123456", "expires_in": 1e12})
        broker = make_lifecycle_broker()
        assert hostile.server is not None
        with broker.client() as admin, broker.client("node") as node:
            add_hostile(admin, hostile, new_canary("huge"))
            token = node.issue_pull_token(f"127.0.0.1:{hostile.server.port}/team/app:1")
        expires = token.expires_at
        assert datetime.now(UTC) < expires <= datetime.now(UTC) + timedelta(hours=1)
