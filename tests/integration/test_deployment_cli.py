"""The deployment lifecycle through the real commands a user and a node run.

`pullbroker serve` (as shipped), `pullbroker registry add`, `pullbroker deployment create`,
`pullbroker-sidecar pull --deployment`, `pullbroker deployment get`: the node's status
reports reach the broker and the record ends DEPLOYED with the pulled digest, or FAILED
with a category when the tag does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages
from tests.integration.conftest import PULLBROKER, ServeProcess

pytestmark = pytest.mark.integration

SIDECAR = str(Path(PULLBROKER).with_name("pullbroker-sidecar"))


def run(home: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PULLBROKER_HOME"}
    return subprocess.run(
        [*argv, "--home", str(home)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.fixture
def served(
    serve_process: Callable[..., ServeProcess], token_registry: TokenAuthRegistry, tmp_path: Path
) -> ServeProcess:
    """A broker with the harness registry registered as 'team'."""
    broker = serve_process()
    ca = tmp_path / "registry-ca.pem"
    ca.write_text(token_registry.ca_pem)
    added = run(
        broker.home.root,
        PULLBROKER, "registry", "add", "--name", "team", "--type", "generic",
        "--url", token_registry.url, "--username", ALICE, "--password-stdin",
        "--registry-ca", str(ca),
        stdin=token_registry.users[ALICE],
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return broker


def deployment(home: Path, name: str) -> dict[str, object]:
    got = run(home, PULLBROKER, "deployment", "get", name, "-o", "json")
    assert got.returncode == 0, got.stderr
    document: dict[str, object] = json.loads(got.stdout)
    return document


class TestDeploymentThroughTheCommands:
    """A node's pull with --deployment moves the broker's record to DEPLOYED or FAILED."""

    def test_pull_reports_deployed_with_digest(
        self, served: ServeProcess, pushed_images: StandardImages, tmp_path: Path
    ) -> None:
        """create -> sidecar pull --deployment -> get shows DEPLOYED and the pulled digest."""
        home, image = served.home.root, pushed_images.app
        made = run(
            home, PULLBROKER, "deployment", "create", "web", "--image", image.reference,
            "--registry", "team", "--kubernetes", "prod/web",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        pulled = run(
            home, SIDECAR, "pull", image.reference, "--dest", f"oci:{tmp_path / 'web'}",
            "--deployment", "web", "--output", "json", "--quiet",
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        record = deployment(home, "web")
        assert record["state"] == "DEPLOYMENT_STATE_DEPLOYED"
        assert record["digest"] == image.digest
        assert str(record["reported_by"]).startswith("spiffe://pullbroker.local/node/")

    def test_missing_tag_reports_failed_not_found(
        self, served: ServeProcess, pushed_images: StandardImages, tmp_path: Path
    ) -> None:
        """A tag that does not exist ends the deployment FAILED, category not found."""
        home = served.home.root
        image = pushed_images.app.reference.replace(":v1", ":no-such-tag")
        made = run(
            home, PULLBROKER, "deployment", "create", "typo", "--image", image,
            "--registry", "team", "--kubernetes", "prod/typo",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        pulled = run(
            home, SIDECAR, "pull", image, "--dest", f"oci:{tmp_path / 't'}", "--deployment", "typo"
        )
        assert pulled.returncode != 0
        text = json.dumps(deployment(home, "typo")).upper()
        assert "FAILED" in text
        assert "NOT_FOUND" in text
