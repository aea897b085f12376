"""ListRegistryKinds drives CreateRegistry for every kind, as a platform's form would: only
what the catalogue says, over the real API. Token kinds are also created with a live test
against the harness registry; cloud kinds are created without one (their clouds are not
here)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from pullbroker.v1 import registry_pb2

from tests.harness.kind_forms import credential_values, required_values
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE
from tests.integration.conftest import RunningBroker
from tests.integration.lifecycle.test_cli import PULLBROKER

pytestmark = pytest.mark.integration

TOKEN_KINDS = ("generic", "docker_hub", "ghcr", "quay", "harbor")
"""Kinds a registry speaking the Docker token protocol serves: the harness registry does."""


def cli(broker: RunningBroker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    return subprocess.run(
        [PULLBROKER, *args, "--home", str(broker.home.root)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def registry_from(kind: Any, name: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {**required_values(kind.fields), "display_name": name, **overrides}
    return registry_pb2.Registry(type=kind.type, **values)


def credential_from(credential_type: Any, **secrets: str) -> Any:
    values = credential_values(credential_type.type, credential_type.fields, secrets)
    message = getattr(registry_pb2.Credential(), credential_type.type).__class__(**values)
    return registry_pb2.Credential(**{credential_type.type: message})


class TestCatalogueDrivesCreate:
    """Every kind, every credential type: created from the catalogue alone."""

    def test_create_every_kind(
        self, broker: RunningBroker, token_registry: TokenAuthRegistry
    ) -> None:
        """test=false with examples and made-up secrets; token kinds again with test=true,
        pointed at the harness registry with a real login."""
        with broker.client() as admin:
            kinds = list(admin.list_registry_kinds().kinds)
            assert len(kinds) == len(registry_pb2.RegistryType.values()) - 1
            created = 0
            for kind in kinds:
                types: list[Any] = list(kind.credential_types) or [None]
                for n, credential_type in enumerate(types):
                    name = f"{kind.kind.replace('_', '-')}-{n}"
                    credential = credential_from(credential_type) if credential_type else None
                    # Records sharing a host are told apart by the optional repositories field.
                    registry = registry_from(kind, name, repositories=[f"{name}/**"])
                    record = admin.create_registry(registry, credential)
                    assert list(record.repositories) == [f"{name}/**"]
                    assert record.type == kind.type
                    assert record.url.startswith("https://")
                    if kind.default_host:
                        assert record.host == kind.default_host
                    created += 1
                if kind.kind in TOKEN_KINDS:
                    basic = next(c for c in kind.credential_types if c.type == "basic")
                    live = registry_from(
                        kind,
                        f"live-{kind.kind.replace('_', '-')}",
                        url=token_registry.url,
                        registry_ca_pem=token_registry.ca_pem,
                        repositories=[f"{kind.kind}/**"],
                    )
                    secrets = {"username": ALICE, "password": token_registry.users[ALICE]}
                    admin.create_registry(live, credential_from(basic, **secrets), test=True)
                    created += 1
            assert created == len(list(admin.iter_registries()))


class TestKindsCli:
    """`registry kinds` as a table, one kind in detail, and JSON."""

    def test_kinds_command(self, broker: RunningBroker) -> None:
        """The table lists every kind with its default url; detail and JSON agree."""
        table = cli(broker, "registry", "kinds")
        assert table.returncode == 0, table.stderr
        assert "docker_hub" in table.stdout
        assert "https://registry-1.docker.io" in table.stdout
        assert "url|region" in table.stdout
        detail = cli(broker, "registry", "kinds", "ghcr")
        assert detail.returncode == 0, detail.stderr
        assert "password (required, secret)" in detail.stdout
        as_json = cli(broker, "registry", "kinds", "-o", "json")
        kinds = json.loads(as_json.stdout)["kinds"]
        ghcr = next(k for k in kinds if k["kind"] == "ghcr")
        assert ghcr["default_url"] == "https://ghcr.io"
        assert ghcr["credential_types"][0]["type"] == "basic"
        unknown = cli(broker, "registry", "kinds", "nope")
        assert unknown.returncode == 2
        assert "unknown registry kind" in unknown.stderr
