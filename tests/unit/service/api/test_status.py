"""The BrokerError -> gRPC status table and retry hints."""

from __future__ import annotations

import grpc
import pytest
from pullbroker_service.api.status import (
    CURRENT_ETAG_KEY,
    RETRY_AFTER_KEY,
    rpc_status,
    status_for,
)
from pullbroker_service.domain import errors as e
from pullbroker_service.infra.logging import register_secret_value


class _Unmapped(e.BrokerError):
    pass


class _MoreSpecific(e.ScopeNotAllowed):
    pass


class TestStatusFor:
    @pytest.mark.parametrize(
        ("exc", "code"),
        [
            (e.InvalidReference("x"), grpc.StatusCode.INVALID_ARGUMENT),
            (e.HostMismatch("x"), grpc.StatusCode.INVALID_ARGUMENT),
            (e.RegistryNotFound("x"), grpc.StatusCode.NOT_FOUND),
            (e.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
            (e.EtagMismatch("x"), grpc.StatusCode.ABORTED),
            (e.StillReferenced("x"), grpc.StatusCode.FAILED_PRECONDITION),
            (e.IdentityNotAllowed("x"), grpc.StatusCode.PERMISSION_DENIED),
            (e.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
            (e.CredentialRejected("x"), grpc.StatusCode.FAILED_PRECONDITION),
            (e.PullNotAllowed("x"), grpc.StatusCode.PERMISSION_DENIED),
            (e.RegistryUnreachable("x"), grpc.StatusCode.UNAVAILABLE),
            (e.RateLimited("x", 3), grpc.StatusCode.RESOURCE_EXHAUSTED),
            (e.BackendUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
            (e.SecretMissing("x"), grpc.StatusCode.INTERNAL),
        ],
    )
    def test_table(self, exc: e.BrokerError, code: grpc.StatusCode) -> None:
        """Each error class maps to its documented status code."""
        assert status_for(exc) is code

    def test_most_specific_class_wins(self) -> None:
        """A subclass the table does not name takes its nearest named ancestor's code."""
        assert status_for(_MoreSpecific("x")) is grpc.StatusCode.PERMISSION_DENIED

    def test_unmapped_is_internal(self) -> None:
        """A BrokerError no table entry covers is INTERNAL."""
        assert status_for(_Unmapped("x")) is grpc.StatusCode.INTERNAL


class TestRpcStatus:
    def test_rate_limited_carries_retry_after(self) -> None:
        """RateLimited sends its wait in seconds as retry-after trailing metadata."""
        status = rpc_status(e.RateLimited("slow down", retry_after=2.5))
        assert (RETRY_AFTER_KEY, "2.5") in status.trailing_metadata
        assert status.message == "slow down"

    def test_backend_unavailable_carries_retry_after(self) -> None:
        """BackendUnavailable sends its default one-second hint."""
        status = rpc_status(e.BackendUnavailable("vault is down"))
        assert status.code is grpc.StatusCode.UNAVAILABLE
        assert (RETRY_AFTER_KEY, "1") in status.trailing_metadata

    def test_other_errors_carry_no_hint(self) -> None:
        """Errors not worth retrying have no retry-after."""
        assert rpc_status(e.EtagMismatch("stale")).trailing_metadata == ()

    def test_etag_mismatch_carries_the_current_etag(self) -> None:
        """A lost conditional write is ABORTED with the record's etag now as current-etag."""
        status = rpc_status(e.EtagMismatch("stale", current_etag="e7"))
        assert status.code is grpc.StatusCode.ABORTED
        assert status.trailing_metadata == ((CURRENT_ETAG_KEY, "e7"),)

    def test_message_is_scrubbed_of_registered_secrets(self) -> None:
        """A registered secret inside an error message never reaches the caller."""
        register_secret_value("status-secret-value-123")
        status = rpc_status(e.CredentialRejected("refused status-secret-value-123 at host"))
        assert "status-secret-value-123" not in status.message
        assert "refused" in status.message
