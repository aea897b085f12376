"""`pullbroker deployment ...`, `policy check` and `audit tail`, run as a person would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.integration.lifecycle.node import add_registry, deploy_on_node

pytestmark = pytest.mark.integration

PULLBROKER = str(Path(sys.executable).with_name("pullbroker"))
NODE = "spiffe://pullbroker.local/node/n1"


def cli(broker: LifecycleBroker, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    return subprocess.run(
        [PULLBROKER, *args, "--home", str(broker.home.root)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


class TestDeploymentCommands:
    """create, list, get, watch and terminate, in table and JSON output."""

    async def test_lifecycle_through_the_cli(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A deployment made with the CLI is deployed by a node and shown, then terminated."""
        image = pushed_images.app.reference
        with lifecycle_broker.client() as admin:
            add_registry(admin, "team", token_registry, ALICE)
        made = cli(lifecycle_broker, "deployment", "create", "web", "--image", image,
                   "--registry", "team", "--kubernetes", "prod/web")  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "PENDING_DEPLOY" in made.stdout
        await deploy_on_node(lifecycle_broker.target("node"), "web", image)
        listed = cli(lifecycle_broker, "deployment", "list")
        assert listed.returncode == 0, listed.stderr
        assert "web" in listed.stdout
        assert "DEPLOYED" in listed.stdout
        assert "kubernetes:prod/web" in listed.stdout
        shown = cli(lifecycle_broker, "deployment", "get", "web", "-o", "json")
        assert json.loads(shown.stdout)["digest"] == pushed_images.app.digest
        watched = cli(lifecycle_broker, "deployment", "watch", "web", "--until-settled")
        assert watched.returncode == 0, watched.stderr
        assert watched.stdout.strip() == f"deployments/web: DEPLOYED {pushed_images.app.digest}"
        ended = cli(lifecycle_broker, "deployment", "terminate", "web")
        assert ended.stdout.strip() == "terminated deployments/web"
        assert "no deployments" in cli(lifecycle_broker, "deployment", "list").stdout

    def test_refusal_is_one_line(self, lifecycle_broker: LifecycleBroker) -> None:
        """A refused create prints the broker's reason and the status, exit 1."""
        failed = cli(lifecycle_broker, "deployment", "create", "web", "--image",
                     "ghcr.io/acme/app:1", "--registry", "nope", "--swarm", "api")  # fmt: skip
        assert failed.returncode == 1
        assert "no registry is named 'nope'" in failed.stderr
        assert "[NOT_FOUND]" in failed.stderr


class TestPolicyCheck:
    """`policy check` explains the broker's live decision; exit 0 allowed, 1 denied."""

    def test_allowed_and_denied(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A node may pull (rule 4); the admin has no pull rule; an unknown host has no record."""
        with lifecycle_broker.client() as admin:
            team = add_registry(admin, "team", token_registry, ALICE)
        image = pushed_images.app.reference
        allowed = cli(lifecycle_broker, "policy", "check", NODE, image)
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.splitlines()[0].startswith("allowed:")
        assert "rule 4" in allowed.stdout
        assert team.name in allowed.stdout
        denied = cli(lifecycle_broker, "policy", "check", "spiffe://pullbroker.local/admin", image)
        assert denied.returncode == 1
        assert "denied:" in denied.stdout
        assert "lists registry 'team' together with repository 'team/app'" in denied.stdout
        nowhere = cli(lifecycle_broker, "policy", "check", NODE, "ghcr.io/acme/app:1", "-o", "json")
        answer = json.loads(nowhere.stdout)
        assert answer["allowed"] is False
        assert answer["reason"] == "no registry is registered for host ghcr.io"


class TestAuditTail:
    """`audit tail` reads the broker's audit file, filtered."""

    def test_filters(
        self,
        lifecycle_broker: LifecycleBroker,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """Filtering by identity glob, registry and outcome keeps exactly the matching events."""
        with lifecycle_broker.client() as admin, lifecycle_broker.client("node") as node:
            team = add_registry(admin, "team", token_registry, ALICE)
            node.issue_pull_token(pushed_images.app.reference)
            node.issue_pull_token(pushed_images.app.reference)
        lifecycle_broker.audit_events()  # written out
        nodes = cli(
            lifecycle_broker, "audit", "tail", "--identity", "spiffe://*/node/*", "-o", "json"
        )
        assert nodes.returncode == 0, nodes.stderr
        events = [json.loads(line) for line in nodes.stdout.splitlines()]
        assert [(e["action"], e["outcome"]) for e in events] == [("token.issue", "allowed")] * 2
        by_registry = cli(lifecycle_broker, "audit", "tail", "--registry",
                          team.name.removeprefix("registries/"), "-n", "1")  # fmt: skip
        assert by_registry.stdout.count("\n") == 1
        assert "ALLOWED token.issue" in by_registry.stdout
        assert "scope=repository:team/app:pull" in by_registry.stdout
        none = cli(lifecycle_broker, "audit", "tail", "--outcome", "denied")
        assert (none.returncode, none.stdout) == (0, "")
