"""Deployment use cases and credential lifecycle, on the real SQLite stores and local secrets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.deployments import Deployments, NewDeployment
from pullbroker_service.app.lifecycle import DeletionRules
from pullbroker_service.app.registries import Registries
from pullbroker_service.domain.deployment import (
    DeploymentState,
    FailureCategory,
    Report,
    Target,
    TargetKind,
)
from pullbroker_service.domain.errors import (
    AlreadyExists,
    HostMismatch,
    InvalidArgument,
    InvalidTransition,
    NotOwner,
    RegistryNotFound,
    ScopeNotAllowed,
    SecretMissing,
    StillReferenced,
    TargetNotAllowed,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import BasicCredential, RegistryKind, RegistryRecord
from pullbroker_service.domain.policy import Policy
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SCHEMA_VERSION as METADATA_SCHEMA
from pullbroker_service.store.sqlite import SqliteMetadataStore
from pullbroker_service.store.sqlite_deployments import SqliteDeploymentStore

from tests.unit.service.conftest import FakeMinter

ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))
ADMIN2 = Identity("spiffe://pullbroker.local/admin2", frozenset({"admin"}))
OPS = Identity("spiffe://pullbroker.local/ops/alice", frozenset({"admin"}))
NODE = Identity("spiffe://pullbroker.local/node/n1", frozenset({"node"}))
OUTSIDER = Identity("spiffe://pullbroker.local/node/rack/n9", frozenset({"node"}))
IMAGE = "reg.example:5000/team/app:v1"
DIGEST = "sha256:" + "ab" * 32
WEB = Target.of(TargetKind.KUBERNETES, "prod", "web")

POLICY = {
    "rules": [
        {
            "identity": ADMIN.name,
            "roles": ["admin"],
            "targets": ["kubernetes:prod/*", "nitro_enclave:*"],
        },
        {"identity": ADMIN2.name, "roles": ["admin"], "targets": ["**"]},
        {"identity": OPS.name, "roles": ["admin"]},
        {
            "identity": "spiffe://pullbroker.local/node/*",
            "roles": ["node"],
            "registries": ["*"],
            "repositories": ["team/*"],
        },
    ],
    "owner_groups": [{"name": "ops", "members": [OPS.name], "registries": ["team"]}],
}


class MutablePolicy:
    def __init__(self, data: dict[str, Any]) -> None:
        self.policy = Policy.from_mapping(data)

    def current(self) -> Policy:
        return self.policy


@dataclass
class World:
    store: SqliteMetadataStore
    deployment_store: SqliteDeploymentStore
    secrets: LocalSecretBackend
    registries: Registries
    deployments: Deployments
    audit: AuditSink
    policy: MutablePolicy

    async def registry(
        self, name: str = "team", url: str = "https://reg.example:5000"
    ) -> RegistryRecord:
        spec = RegistrySpec(display_name=name, kind=RegistryKind.GENERIC, url=url)
        return await self.registries.create(ADMIN, spec, basic("robot"), test=False)

    async def deploy(self, deployment_id: str = "web", registry: str = "team", **kw: Any) -> Any:
        new = NewDeployment(deployment_id, kw.pop("image", IMAGE), kw.pop("target", WEB), registry)
        return await self.deployments.create(kw.pop("caller", ADMIN), new)

    def audit_lines(self) -> list[dict[str, str]]:
        self.audit.flush()
        return [json.loads(line) for line in self.audit.path.read_text().splitlines()]


def basic(username: str) -> BasicCredential:
    return BasicCredential(username, Secret(f"{username}-password-123456"))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteMetadataStore(tmp_path / "metadata.db")
    deployment_store = SqliteDeploymentStore(tmp_path / "metadata.db")
    secrets = LocalSecretBackend(
        tmp_path / "secrets" / "secrets.db", FileKeyWrapper.open(tmp_path / "secrets" / "kek.key")
    )
    policy = MutablePolicy(POLICY)
    audit = AuditSink(tmp_path / "audit" / "audit.jsonl")
    registries = Registries(
        store,
        secrets,
        MintersByKind.with_bearer(FakeMinter()),
        TokenCache(),
        deletion=DeletionRules(policy, deployment_store),
        audit=audit,
    )
    deployments = Deployments(deployment_store, registries, policy, audit=audit, poll_interval=5)
    try:
        yield World(store, deployment_store, secrets, registries, deployments, audit, policy)
    finally:
        audit.close()
        await deployment_store.close()
        await store.close()
        await secrets.close()


class TestCreate:
    """A deployment names an image, a registry serving its host, and a target policy allows."""

    async def test_created_pending(self, world: World) -> None:
        """A new deployment is PENDING_DEPLOY, names its registry by id, records its creator."""
        registry = await world.registry()
        created = await world.deploy()
        assert created.state is DeploymentState.PENDING_DEPLOY
        assert created.registry_id == registry.id
        assert created.creator == ADMIN.name
        assert created.image == "reg.example:5000/team/app:v1"
        assert await world.deployments.get("deployments/web") == created

    async def test_target_not_in_policy(self, world: World) -> None:
        """A target no rule of the caller lists is refused, naming the target."""
        await world.registry()
        swarm = Target.of(TargetKind.SWARM, "api")
        with pytest.raises(TargetNotAllowed, match="swarm:api"):
            await world.deploy(target=swarm)

    async def test_image_host_must_match_registry(self, world: World) -> None:
        """An image on another host than the registry's credential is refused."""
        await world.registry()
        with pytest.raises(HostMismatch, match=r"ghcr\.io"):
            await world.deploy(image="ghcr.io/acme/app:1")

    async def test_unknown_registry(self, world: World) -> None:
        """A registry that does not exist is NotFound."""
        with pytest.raises(RegistryNotFound):
            await world.deploy(registry="nope")

    @pytest.mark.parametrize("bad_id", ["Web", "9web", "web_1", "", "a" * 64])
    async def test_invalid_id(self, world: World, bad_id: str) -> None:
        """Ids are lowercase DNS-label-like names."""
        await world.registry()
        with pytest.raises(InvalidArgument, match="deployment id"):
            await world.deploy(bad_id)

    async def test_id_reused_only_after_termination(self, world: World) -> None:
        """A live id is taken; a terminated one may be created again."""
        await world.registry()
        await world.deploy()
        with pytest.raises(AlreadyExists):
            await world.deploy()
        await world.deployments.terminate(ADMIN, "web")
        again = await world.deploy()
        assert again.state is DeploymentState.PENDING_DEPLOY


class TestReports:
    """Nodes move a deployment through its states; only nodes that may pull it report."""

    async def test_deploying_then_deployed(self, world: World) -> None:
        """DEPLOYING, then DEPLOYED with the digest, reported by the node."""
        await world.registry()
        await world.deploy()
        await world.deployments.report(NODE, "web", Report(DeploymentState.DEPLOYING))
        done = await world.deployments.report(NODE, "web", Report(DeploymentState.DEPLOYED, DIGEST))
        assert (done.state, done.digest, done.reported_by) == (
            DeploymentState.DEPLOYED,
            DIGEST,
            NODE.name,
        )

    async def test_failed_keeps_the_running_digest(self, world: World) -> None:
        """A failed redeploy carries category and message, and keeps the digest still running."""
        await world.registry()
        await world.deploy()
        await world.deployments.report(NODE, "web", Report(DeploymentState.DEPLOYED, DIGEST))
        failed = await world.deployments.report(
            NODE,
            "web",
            Report(DeploymentState.FAILED, "", FailureCategory.NOT_FOUND, "tag v2 not found"),
        )
        assert failed.failure_category is FailureCategory.NOT_FOUND
        assert failed.message == "tag v2 not found"
        assert failed.digest == DIGEST

    @pytest.mark.parametrize(
        ("report", "fragment"),
        [
            (lambda: Report(DeploymentState.DEPLOYED), "needs the manifest digest"),
            (lambda: Report(DeploymentState.DEPLOYED, "sha256:short"), "sha256"),
            (lambda: Report(DeploymentState.TERMINATED), "DEPLOYING, DEPLOYED or FAILED"),
            (
                lambda: Report(DeploymentState.DEPLOYING, "", FailureCategory.NOT_FOUND),
                "FAILED only",
            ),
            (
                lambda: Report(DeploymentState.FAILED, "", FailureCategory.NOT_FOUND, "x" * 1025),
                "1024",
            ),
        ],
    )
    def test_invalid_reports(self, report: Any, fragment: str) -> None:
        """Malformed reports are refused before they touch the store."""
        with pytest.raises(InvalidArgument, match=fragment):
            report()

    async def test_node_must_be_allowed_to_pull(self, world: World) -> None:
        """A node the policy does not let pull the image cannot report on it."""
        await world.registry()
        await world.deploy()
        with pytest.raises(ScopeNotAllowed, match="may not report on deployment 'web'"):
            await world.deployments.report(OUTSIDER, "web", Report(DeploymentState.DEPLOYING))
        assert (await world.deployments.get("web")).state is DeploymentState.PENDING_DEPLOY

    async def test_terminated_is_final(self, world: World) -> None:
        """No report moves a terminated deployment; terminating twice is refused."""
        await world.registry()
        await world.deploy()
        await world.deployments.terminate(ADMIN, "web")
        with pytest.raises(InvalidTransition, match="terminated"):
            await world.deployments.report(NODE, "web", Report(DeploymentState.DEPLOYING))
        with pytest.raises(InvalidTransition, match="already terminated"):
            await world.deployments.terminate(ADMIN, "web")


class TestWatch:
    """Watch yields the deployment now and on every change, and ends at termination."""

    async def test_sees_every_transition(self, world: World) -> None:
        """PENDING, DEPLOYING, DEPLOYED, TERMINATED arrive in order; the stream then ends."""
        await world.registry()
        await world.deploy()
        seen: list[DeploymentState] = []

        async def watch() -> None:
            async for record in world.deployments.watch("web"):
                seen.append(record.state)

        watcher = asyncio.create_task(watch())
        steps = ((DeploymentState.DEPLOYING, ""), (DeploymentState.DEPLOYED, DIGEST))
        for count, (state, digest) in enumerate(steps, start=1):
            await _until(lambda c=count: len(seen) >= c)  # the watcher saw the last change
            await world.deployments.report(NODE, "web", Report(state, digest))
        await _until(lambda: len(seen) >= 3)
        await world.deployments.terminate(ADMIN, "web")
        await asyncio.wait_for(watcher, 10)
        assert seen == [
            DeploymentState.PENDING_DEPLOY,
            DeploymentState.DEPLOYING,
            DeploymentState.DEPLOYED,
            DeploymentState.TERMINATED,
        ]


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


class TestList:
    """Lists page by id, filter by registry, and hide terminated deployments unless asked."""

    async def test_pages_and_filters(self, world: World) -> None:
        """Three deployments over two pages; the registry filter and terminated flag apply."""
        await world.registry()
        await world.registry("mirror", "https://mirror.example")
        for name in ("a", "b", "c"):
            await world.deploy(name)
        await world.deploy("m", "mirror", image="mirror.example/team/app:v1")
        await world.deployments.terminate(ADMIN, "b")
        first, token = await world.deployments.list(2, "", include_terminated=False)
        rest, end = await world.deployments.list(2, token, include_terminated=False)
        assert [d.id for d in first + rest] == ["a", "c", "m"]
        assert end == ""
        team, _ = await world.deployments.list(0, "", registry="team", include_terminated=True)
        assert [d.id for d in team] == ["a", "b", "c"]


class TestDeletionRules:
    """A registry is deleted only by its owner and only when no deployment uses it."""

    async def test_referenced_registry_is_kept(self, world: World) -> None:
        """Deleting a registry in use names the deployments; after termination it goes."""
        registry = await world.registry()
        await world.deploy("web")
        await world.deploy("api")
        with pytest.raises(StillReferenced, match="deployment\\(s\\) api, web: terminate"):
            await world.registries.delete(ADMIN, "team", None)
        await world.store.get(registry.id)  # still there
        await world.deployments.terminate(ADMIN, "web")
        await world.deployments.terminate(ADMIN, "api")
        await world.registries.delete(ADMIN, "team", None)
        with pytest.raises(RegistryNotFound):
            await world.store.get(registry.id)

    async def test_only_creator_or_owner_group(self, world: World) -> None:
        """Another admin is refused; a member of the owner group covering it may delete it."""
        await world.registry()
        with pytest.raises(NotOwner, match=r"only its creator .*/admin or a member of owner group"):
            await world.registries.delete(ADMIN2, "team", None)
        await world.registries.delete(OPS, "team", None)

    async def test_refusals_are_audited(self, world: World) -> None:
        """A refused delete is a DENIED audit event with the reason."""
        await world.registry()
        with pytest.raises(NotOwner):
            await world.registries.delete(ADMIN2, "team", None)
        last = world.audit_lines()[-1]
        assert (last["action"], last["outcome"], last["identity"]) == (
            "registry.delete",
            "denied",
            ADMIN2.name,
        )
        assert "only its creator" in last["reason"]


class TestInlineCredential:
    """A credential given inline lives exactly as long as its deployment."""

    async def test_terminate_deletes_the_secret(self, world: World) -> None:
        """The deployment's own registry record and every secret version go with it."""
        spec = RegistrySpec(
            display_name="", kind=RegistryKind.GENERIC, url="https://reg.example:5000"
        )
        new = NewDeployment(
            "signer",
            IMAGE,
            Target.of(TargetKind.NITRO_ENCLAVE, "signer"),
            inline=(spec, basic("enclave")),
        )
        created = await world.deployments.create(ADMIN, new)
        assert created.inline_credential
        registry = await world.store.get(created.registry_id)
        assert registry.display_name == "signer-inline"
        assert registry.secret_ref is not None
        assert registry.id in await world.secrets.list_keys()
        await world.deployments.terminate(ADMIN2, "signer")  # whoever ends it, it goes
        assert registry.id not in await world.secrets.list_keys()
        with pytest.raises(SecretMissing):
            await world.secrets.get(registry.secret_ref)
        with pytest.raises(RegistryNotFound):
            await world.store.get(registry.id)
        actions = [(e["action"], e["outcome"]) for e in world.audit_lines()]
        assert ("credential.delete", "allowed") in actions

    async def test_failed_create_leaves_no_secret(self, world: World) -> None:
        """An inline deployment refused after its registry was made rolls the registry back."""
        spec = RegistrySpec(display_name="", kind=RegistryKind.GENERIC, url="https://other.example")
        new = NewDeployment(
            "signer", IMAGE, Target.of(TargetKind.NITRO_ENCLAVE, "s"), inline=(spec, basic("x"))
        )
        with pytest.raises(HostMismatch):
            await world.deployments.create(ADMIN, new)
        assert await world.secrets.list_keys() == []
        assert await world.store.list_page(10, None) == []


class TestStore:
    """Deployments share metadata.db with registries without touching their schema."""

    async def test_own_schema_row(self, world: World, tmp_path: Path) -> None:
        """component_schema holds ('deployments', 1); registries' schema_version is untouched."""
        await world.registry()
        await world.deploy()
        with sqlite3.connect(tmp_path / "metadata.db") as conn:
            rows = conn.execute("SELECT component, version FROM component_schema").fetchall()
            versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert rows == [("deployments", 1)]
        assert versions == [(METADATA_SCHEMA,)]
