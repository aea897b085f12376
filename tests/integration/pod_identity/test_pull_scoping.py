"""IssuePullToken scoped by the pod's service account, through a real broker and registry.

The policy (conftest.py) grants team/app only to service account team-a/puller and
team/other to every request of a node. Tokens are signed by the stand-in cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from tests.harness.canary import find_in_text, find_in_tree
from tests.harness.standard import StandardImages
from tests.integration.pod_identity.cluster import ClusterKey, FakeCluster
from tests.integration.pod_identity.conftest import PodWorld

pytestmark = pytest.mark.integration


class TestScopedPulls:
    def test_the_right_service_account_gets_a_token(
        self, pod_world: PodWorld, pushed_images: StandardImages
    ) -> None:
        """team-a/puller's token (RS256 and ES256 keys alike) gets a team/app pull token."""
        for key in pod_world.cluster.keys:
            sa_token = pod_world.cluster.token("team-a", "puller", key=key)
            issued = pod_world.node.issue(pushed_images.app.reference, sa_token)
            assert issued.scope == "repository:team/app:pull"
            assert issued.token

    def test_another_service_account_is_denied(
        self, pod_world: PodWorld, pushed_images: StandardImages
    ) -> None:
        """A valid token of another namespace's account: PERMISSION_DENIED, saying why."""
        sa_token = pod_world.cluster.token("team-b", "puller")
        error = pod_world.node.refusal(pushed_images.app.reference, sa_token)
        assert error.code is grpc.StatusCode.PERMISSION_DENIED
        assert "not for service account team-b/puller" in error.details

    def test_no_token_is_denied_by_a_scoped_rule(
        self, pod_world: PodWorld, pushed_images: StandardImages
    ) -> None:
        """Without a token the node's own identity no longer reaches a pod-scoped grant."""
        error = pod_world.node.refusal(pushed_images.app.reference)
        assert error.code is grpc.StatusCode.PERMISSION_DENIED
        assert "no service-account token" in error.details

    def test_unscoped_rules_grant_with_or_without_a_token(
        self, pod_world: PodWorld, pushed_images: StandardImages
    ) -> None:
        """team/other (a rule without `kubernetes`) is granted to any pod and to none."""
        for sa_token in ("", pod_world.cluster.token("team-b", "web")):
            issued = pod_world.node.issue(pushed_images.other.reference, sa_token)
            assert issued.scope == "repository:team/other:pull"


class TestRejectedTokens:
    def test_foreign_signature(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """A token signed by another cluster's key is UNAUTHENTICATED, even for team/other."""
        stranger = FakeCluster(issuer=pod_world.cluster.issuer, keys=[ClusterKey.generate("ES256")])
        for image in (pushed_images.app, pushed_images.other):
            error = pod_world.node.refusal(image.reference, stranger.token("team-a", "puller"))
            assert error.code is grpc.StatusCode.UNAUTHENTICATED

    def test_tampered_token(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """A trusted key's token with another payload spliced in is UNAUTHENTICATED."""
        header, _, signature = pod_world.cluster.token("team-b", "web").split(".")
        _, payload, _ = pod_world.cluster.token("team-a", "puller").split(".")
        error = pod_world.node.refusal(
            pushed_images.app.reference, f"{header}.{payload}.{signature}"
        )
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        assert "signature" in error.details

    def test_wrong_audience(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """A token minted for the API server's audience is UNAUTHENTICATED."""
        sa_token = pod_world.cluster.token(
            "team-a", "puller", audience="https://kubernetes.default.svc"
        )
        error = pod_world.node.refusal(pushed_images.app.reference, sa_token)
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        assert "audience" in error.details

    def test_expired_token(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """A token that expired an hour ago is UNAUTHENTICATED."""
        sa_token = pod_world.cluster.token(
            "team-a", "puller", now=time.time() - 2 * 3600, lifetime=3600
        )
        error = pod_world.node.refusal(pushed_images.app.reference, sa_token)
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in error.details

    def test_not_a_jwt(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """Garbage in the token field is UNAUTHENTICATED, not an internal error."""
        error = pod_world.node.refusal(pushed_images.other.reference, "not-a-token")
        assert error.code is grpc.StatusCode.UNAUTHENTICATED


class TestKeysAndLeaks:
    def test_rotated_key_is_picked_up_while_serving(
        self, pod_world: PodWorld, pushed_images: StandardImages
    ) -> None:
        """After the refresh job publishes a new key, tokens signed with it are accepted."""
        rotated = FakeCluster(
            issuer=pod_world.cluster.issuer,
            keys=[*pod_world.cluster.keys, ClusterKey.generate("ES256")],
        )
        sa_token = rotated.token("team-a", "puller")
        error = pod_world.node.refusal(pushed_images.app.reference, sa_token)
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        rotated.publish(pod_world.jwks_file)
        time.sleep(1.1)  # unknown key ids re-check the file at most once a second
        issued = pod_world.node.issue(pushed_images.app.reference, sa_token)
        assert issued.scope == "repository:team/app:pull"

    def test_tokens_go_nowhere(self, pod_world: PodWorld, pushed_images: StandardImages) -> None:
        """No accepted or refused token reaches the home folder, its logs or an error."""
        good = pod_world.cluster.token("team-a", "puller")
        denied = pod_world.cluster.token("team-b", "puller")
        wrong = pod_world.cluster.token("team-a", "puller", audience="vault")
        pod_world.node.issue(pushed_images.app.reference, good)
        details = [
            pod_world.node.refusal(pushed_images.app.reference, t).details for t in (denied, wrong)
        ]
        home = pod_world.broker.home
        for sa_token in (good, denied, wrong):
            assert find_in_tree(home.root, sa_token) == []
            assert not find_in_text(home.broker_log.read_text(), sa_token)
            assert not any(find_in_text(text, sa_token) for text in details)

    def test_broker_without_kubernetes_ignores_tokens(
        self, make_pod_world: Callable[..., PodWorld], pushed_images: StandardImages
    ) -> None:
        """Not configured for a cluster: tokens are ignored, so only unscoped rules grant."""
        world = make_pod_world(kubernetes=False)
        sa_token = world.cluster.token("team-a", "puller")
        issued = world.node.issue(pushed_images.other.reference, sa_token)
        assert issued.scope == "repository:team/other:pull"
        error = world.node.refusal(pushed_images.app.reference, sa_token)
        assert error.code is grpc.StatusCode.PERMISSION_DENIED
