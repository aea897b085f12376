"""The sidecar's deployment status reports: categories for pull errors, and the pull wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from pullbroker.v1 import deployment_pb2 as pb
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.registry import errors as registry
from pullbroker_sidecar import errors as sidecar
from pullbroker_sidecar.report import failure_of, pull_reported

DIGEST = "sha256:" + "cd" * 32
AUTH = pb.FAILURE_CATEGORY_AUTHENTICATION
NOT_ALLOWED = pb.FAILURE_CATEGORY_NOT_ALLOWED
NOT_FOUND = pb.FAILURE_CATEGORY_NOT_FOUND
UNREACHABLE = pb.FAILURE_CATEGORY_REGISTRY_UNREACHABLE
RATE = pb.FAILURE_CATEGORY_RATE_LIMITED
DIGESTS = pb.FAILURE_CATEGORY_DIGEST_MISMATCH


class TestCategories:
    """Each pull failure maps to the category a person acts on, with what to check."""

    @pytest.mark.parametrize(
        ("error", "category", "prefix"),
        [
            (registry.CredentialRejected("refused"), AUTH, "authentication failed"),
            (registry.AuthenticationRequired("401"), AUTH, "authentication"),
            (registry.NotAllowed("denied"), NOT_ALLOWED, "not allowed"),
            (registry.ManifestUnknown("manifest v9 unknown"), NOT_FOUND, "image or tag not found"),
            (registry.NameUnknown("no repo"), NOT_FOUND, "image or tag not found"),
            (registry.RegistryUnreachable("timed out"), UNREACHABLE, "registry unreachable"),
            (registry.RegistryTLSError("bad cert"), UNREACHABLE, "registry unreachable"),
            (registry.RateLimited("429"), RATE, "rate limited"),
            (sidecar.DigestMismatch("b", digest=DIGEST, actual=DIGEST, size=1), DIGESTS, "digest"),
            (
                BrokerCallError(grpc.StatusCode.PERMISSION_DENIED, "policy"),
                NOT_ALLOWED,
                "not allowed",
            ),
            (BrokerCallError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow"), RATE, "rate limited"),
            (sidecar.LayoutError("disk full"), pb.FAILURE_CATEGORY_UNSPECIFIED, "pull failed"),
        ],
    )
    def test_category(self, error: Exception, category: int, prefix: str) -> None:
        """The category is right and the message starts with what happened, then the detail."""
        got, message = failure_of(error)
        assert got == category
        assert message.startswith(prefix)
        assert str(error) in message

    def test_message_is_bounded(self) -> None:
        """A huge error message is cut to the broker's 1024-character limit."""
        _, message = failure_of(registry.ManifestUnknown("x" * 5000))
        assert len(message) == 1024


@dataclass
class Broker:
    """A StatusReporter recording each report's name, state and other fields."""

    reports: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    refuse: bool = False

    async def report_deployment_status(
        self,
        name: str = "",
        state: pb.DeploymentState.ValueType = pb.DEPLOYMENT_STATE_UNSPECIFIED,
        digest: str = "",
        failure_category: pb.FailureCategory.ValueType = pb.FAILURE_CATEGORY_UNSPECIFIED,
        message: str = "",
    ) -> pb.Deployment:
        fields = {"digest": digest, "failure_category": failure_category, "message": message}
        self.reports.append((name, state, fields))
        if self.refuse:
            raise BrokerCallError(grpc.StatusCode.UNAVAILABLE, "broker down")
        return pb.Deployment(name=name)


class TestPullReported:
    """DEPLOYING, then DEPLOYED or FAILED; a report that fails never changes the pull's result."""

    async def test_success(self) -> None:
        """DEPLOYING then DEPLOYED with the digest of the result."""
        broker = Broker()

        async def pull() -> str:
            return DIGEST

        assert await pull_reported(broker, "web", pull, lambda d: d) == DIGEST
        assert [(s, f.get("digest", "")) for _, s, f in broker.reports] == [
            (pb.DEPLOYMENT_STATE_DEPLOYING, ""),
            (pb.DEPLOYMENT_STATE_DEPLOYED, DIGEST),
        ]

    async def test_failure_is_reported_and_raised(self) -> None:
        """The pull's error is reported as FAILED (category, message) and raised unchanged."""
        broker = Broker()

        async def pull() -> str:
            raise registry.ManifestUnknown("manifest no-such-tag unknown")

        with pytest.raises(registry.ManifestUnknown):
            await pull_reported(broker, "web", pull, lambda d: d)
        _, state, fields = broker.reports[-1]
        assert state == pb.DEPLOYMENT_STATE_FAILED
        assert fields["failure_category"] == pb.FAILURE_CATEGORY_NOT_FOUND
        assert "not found" in fields["message"]

    async def test_unreachable_broker_only_warns(self) -> None:
        """If the broker cannot take the reports, the pull still succeeds, with warnings."""
        warnings: list[str] = []

        async def pull() -> str:
            return DIGEST

        result = await pull_reported(
            Broker(refuse=True), "web", pull, lambda d: d, warn=warnings.append
        )
        assert result == DIGEST
        assert len(warnings) == 2
        assert "could not report the status of deployment web" in warnings[0]
