"""The kubelet credential provider: the JSON kubelet sends, schema-valid answers that work."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev set (types-jsonschema)
import pytest

from tests.harness.canary import new_canary
from tests.harness.runtimes import run
from tests.harness.sidecar import KUBELET_PROVIDER, SidecarDaemon, node_env
from tests.integration.nodes.world import LeakCheck, NodeWorld, registry_get

pytestmark = pytest.mark.integration

API = "credentialprovider.kubelet.k8s.io/v1"
SCHEMA = json.loads((Path(__file__).parent / "credentialprovider_v1.schema.json").read_text())


def _validate(document: dict[str, Any], kind: str) -> None:
    jsonschema.validate(document, {**SCHEMA, "$ref": f"#/$defs/{kind}"})


def _provide(
    helper_bin: Path, daemon: SidecarDaemon, request: dict[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """Run the provider as kubelet does: request on stdin, response on stdout."""
    _validate(request, "request")
    done = run([str(helper_bin / KUBELET_PROVIDER)], stdin=json.dumps(request),
               env=node_env(helper_bin, daemon.socket))  # fmt: skip
    assert done.returncode == 0, done.stderr
    response: dict[str, Any] = json.loads(done.stdout)
    _validate(response, "response")
    return response, done.stderr


def _request(image: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "CredentialProviderRequest", "image": image, **extra}


def _seconds(duration: str) -> int:
    assert duration.endswith("s")
    return int(duration[:-1])


class TestKubeletProvider:
    def test_single_image_gets_a_working_login_for_its_repository(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """One auth entry keyed host:port/repo, cached for at most half its life; it works."""
        image = node_world.basic_app
        response, _ = _provide(helper_bin, daemon, _request(image.reference))
        assert response is not None
        assert response["cacheKeyType"] == "Image"
        key = f"{image.registry.host}/{image.repository}"
        assert list(response["auth"]) == [key]
        login = daemon.ask("image_login", image=image.reference)
        remaining = login["expires_at"] - time.time()
        assert 0 < _seconds(response["cacheDuration"]) <= remaining / 2 + 1
        status, digest = registry_get(
            image.registry, f"/v2/{image.repository}/manifests/{image.tag}", response["auth"][key]
        )
        assert (status, digest) == (200, image.digest)

    def test_image_by_digest_with_a_port(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """`host:port/repo@sha256:...` and `host:port/repo:tag@sha256:...` get the same key."""
        image = node_world.basic_app
        name = f"{image.registry.host}/{image.repository}"
        for reference in (f"{name}@{image.digest}", f"{name}:{image.tag}@{image.digest}"):
            response, _ = _provide(helper_bin, daemon, _request(reference))
            assert response is not None
            assert list(response["auth"]) == [name]
            status, digest = registry_get(
                image.registry, f"/v2/{image.repository}/manifests/{image.digest}",
                response["auth"][name],
            )  # fmt: skip
            assert (status, digest) == (200, image.digest)

    def test_service_account_token_request(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """With a service-account token: cache type ServiceAccount, and the token goes nowhere."""
        token = new_canary("sa-token")
        leaks.secrets.append(token)
        request = _request(
            node_world.basic_app.reference,
            serviceAccountToken=token,
            serviceAccountAnnotations={"pullbroker.io/profile": "payments"},
        )
        response, stderr = _provide(helper_bin, daemon, request)
        assert response is not None
        assert response["serviceAccountTokenCacheType"] == "ServiceAccount"
        assert len(response["auth"]) == 1
        assert token not in json.dumps(response)
        leaks.output(stderr)

    def test_denied_image_gets_no_auth(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """An image outside the policy: a valid response without auth, not cached, reason told."""
        response, stderr = _provide(helper_bin, daemon, _request(node_world.basic_other.reference))
        assert response is not None
        assert "auth" not in response
        assert response["cacheDuration"] == "0s"
        assert "policy" in stderr

    def test_bearer_only_registry_says_how_to_pull_instead(
        self, node_world: NodeWorld, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """A registry that gives nodes bearer tokens only: no auth, and the way out on stderr."""
        response, stderr = _provide(
            helper_bin, daemon, _request(node_world.via_door("team/app", "v1"))
        )
        assert response is not None
        assert "auth" not in response
        assert "--dest docker-daemon" in stderr

    def test_malformed_request_fails(
        self, daemon: SidecarDaemon, helper_bin: Path, leaks: LeakCheck
    ) -> None:
        """Not a CredentialProviderRequest: exit 1, one line saying so, nothing on stdout."""
        done = run([str(helper_bin / KUBELET_PROVIDER)], stdin='{"kind": "Pod"}',
                   env=node_env(helper_bin, daemon.socket))  # fmt: skip
        assert done.returncode == 1
        assert done.stdout == ""
        assert "CredentialProviderRequest" in done.stderr
