"""The broker's /metrics, scraped over HTTP from a running broker and parsed as Prometheus does."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, basic_credential
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_text, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.scrape import scrape
from tests.harness.standard import ALICE, StandardImages
from tests.integration.conftest import RunningBroker
from tests.integration.test_api_pull import add_registry

pytestmark = pytest.mark.integration

ISSUE = "IssuePullToken"
NARROW_POLICY = (
    "rules:\n"
    '  - identity: "spiffe://pullbroker.local/admin"\n'
    "    roles: [admin]\n"
    '  - identity: "spiffe://pullbroker.local/node/*"\n'
    "    roles: [node]\n"
    '    registries: ["*"]\n'
    '    repositories: ["team/app"]\n'
)


def metrics_url(broker: RunningBroker) -> str:
    assert broker.metrics_url is not None
    return broker.metrics_url


class TestListener:
    def test_off_unless_configured(self, broker: RunningBroker) -> None:
        """A broker started without metrics_listen opens no metrics listener."""
        assert broker.metrics_url is None

    def test_serves_text_format_at_metrics(self, make_broker: Callable[..., RunningBroker]) -> None:
        """GET /metrics answers the Prometheus text format, with the certificate expiry
        and the backend's health already set at start."""
        broker = make_broker(metrics_listen="127.0.0.1:0")
        response = httpx.get(metrics_url(broker), timeout=10, trust_env=False)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = scrape(metrics_url(broker))
        assert found.value("pullbroker_secret_backend_up", backend="local") == 1
        # The dev CA's server certificate and CA live for years, and are not expired.
        assert found.value("pullbroker_certificate_expiry_days", certificate="serving") > 14
        assert found.value("pullbroker_certificate_expiry_days", certificate="client_ca") > 14


class TestTokenMetrics:
    def test_counts_move_as_tokens_are_issued(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """An issued token counts by kind and outcome; the first is a miss with one mint
        timed, the second a cache hit; a refused login counts under its own RPC; the secret
        backend's calls are timed."""
        broker = make_broker(metrics_listen="127.0.0.1:0")
        url = metrics_url(broker)
        with broker.client("admin") as admin, broker.client("node") as node:
            add_registry(admin, "team", token_registry, ALICE)
            before = scrape(url)
            node.issue_pull_token(pushed_images.app.reference)
            token = node.issue_pull_token(pushed_images.app.reference)
            with pytest.raises(BrokerCallError):  # generic registries have no runtime login
                node.issue_registry_login(pushed_images.app.reference)
        after = scrape(url)
        issued = {"rpc": ISSUE, "kind": "generic", "outcome": "issued"}
        assert before.value("pullbroker_token_requests_total", **issued) == 0
        assert after.value("pullbroker_token_requests_total", **issued) == 2
        assert after.sum("pullbroker_token_requests_total", rpc="IssueRegistryLogin") == 1
        assert after.value("pullbroker_token_cache_lookups_total", result="miss") >= 1
        assert after.value("pullbroker_token_cache_lookups_total", result="hit") >= 1
        assert after.value("pullbroker_upstream_mint_seconds_count", kind="generic") >= 1
        assert after.value("pullbroker_token_cache_entries") >= 1
        assert after.value("pullbroker_secret_backend_seconds_count", backend="local",
                           operation="put") >= 1  # fmt: skip
        assert after.value("pullbroker_secret_backend_seconds_count", backend="local",
                           operation="get") >= 1  # fmt: skip
        assert not find_in_text(after.text, token.token.reveal())

    def test_policy_denial_and_rate_limit_are_counted(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A refused scope counts as a policy denial (kind "none": no registry was chosen
        for the caller); a call over the limit counts as rate limited."""
        from pullbroker_service.config.broker import RateLimitConfig

        limits = RateLimitConfig(issue_pull_token_per_second=0.01, issue_pull_token_burst=2)
        broker = make_broker(NARROW_POLICY, metrics_listen="127.0.0.1:0", rate_limits=limits)
        with broker.client("admin") as admin, broker.client("node") as node:
            add_registry(admin, "team", token_registry, ALICE)
            with pytest.raises(BrokerCallError) as denied:
                node.issue_pull_token(pushed_images.other.reference)
            assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED
            node.issue_pull_token(pushed_images.app.reference)
            with pytest.raises(BrokerCallError) as limited:
                node.issue_pull_token(pushed_images.app.reference)
            assert limited.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        found = scrape(metrics_url(broker))
        assert found.value("pullbroker_policy_denials_total", rpc=ISSUE) == 1
        denied_labels = {"rpc": ISSUE, "kind": "none", "outcome": "denied"}
        assert found.value("pullbroker_token_requests_total", **denied_labels) == 1
        assert found.value("pullbroker_rate_limited_calls_total", call=ISSUE) == 1
        limited_labels = {"rpc": ISSUE, "kind": "none", "outcome": "rate_limited"}
        assert found.value("pullbroker_token_requests_total", **limited_labels) == 1

    def test_rejected_credential_is_an_upstream_failure(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A registry refusing the stored credential counts as a failed mint, reason
        "rejected"; neither the password nor the canary appears in the scrape."""
        password = new_canary("metrics-password")
        broker = make_broker(metrics_listen="127.0.0.1:0")
        with broker.client("admin") as admin, broker.client("node") as node:
            record = registry_pb2.Registry(
                display_name="wrong",
                type=registry_pb2.REGISTRY_TYPE_GENERIC,
                url=token_registry.url,
                registry_ca_pem=token_registry.ca_pem,
            )
            admin.create_registry(record, basic_credential(ALICE, Secret(password)))
            with pytest.raises(BrokerCallError):
                node.issue_pull_token(pushed_images.app.reference)
        found = scrape(metrics_url(broker))
        failed = {"kind": "generic", "reason": "rejected"}
        assert found.value("pullbroker_upstream_mint_failures_total", **failed) == 1
        upstream = {"rpc": ISSUE, "kind": "none", "outcome": "upstream_error"}
        assert found.value("pullbroker_token_requests_total", **upstream) == 1
        assert not find_in_text(found.text, password)
        assert not find_in_text(found.text, token_registry.users[ALICE])


class TestNoSecretsInLabels:
    def test_labels_hold_only_bounded_values(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """After real calls, no label value names an identity, image, repository, host or
        registry id: every value is one of the metric's fixed enums."""
        from pullbroker_service.infra import metrics as m

        broker = make_broker(metrics_listen="127.0.0.1:0")
        with broker.client("admin") as admin, broker.client("node") as node:
            created = add_registry(admin, "team", token_registry, ALICE)
            token = node.issue_pull_token(pushed_images.app.reference)
        found = scrape(metrics_url(broker))
        allowed = {
            *m.RPCS, *m.KINDS, *m.OUTCOMES, *m.FAILURE_REASONS, *m.BACKEND_OPERATIONS,
            "hit", "miss", "coalesced", "local", "serving", "client_ca", "TestConnection",
        }  # fmt: skip
        for (_name, labels), _value in found.samples.items():
            for key, value in labels:
                if key != "le":
                    assert value in allowed, (key, value)
        for needle in (token.token.reveal(), created.name, "team/app", token_registry.host):
            assert not find_in_text(found.text, needle), needle
