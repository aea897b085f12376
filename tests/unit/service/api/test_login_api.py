"""Logins on the wire: RegistryLogin, PullToken.passthrough, a servicer without logins."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import grpc
import pytest
from pullbroker.v1 import pull_pb2
from pullbroker_client.secret import Secret
from pullbroker_service.api import convert
from pullbroker_service.api.pull_servicer import PullServicer
from pullbroker_service.domain.model import AuthKind, MintedToken, RegistryKind
from pullbroker_service.minting.runtime_logins import MintedLogin

from tests.unit.service.api.test_convert import NOW, record


def _token(kind: AuthKind, username: str = "") -> MintedToken:
    expires = NOW + dt.timedelta(minutes=5)
    return MintedToken(kind, username, Secret("t"), "", NOW, expires, "team/app")


class TestPullTokenPassthrough:
    def test_basic_token_of_a_token_endpoint_kind_is_passthrough(self) -> None:
        """A BASIC token from a token-endpoint kind is the stored credential: flagged."""
        message = convert.token_to_proto(_token(AuthKind.BASIC, "robot"), record())
        assert message.passthrough

    def test_ecr_basic_and_bearer_tokens_are_not(self) -> None:
        """ECR's short-lived Basic token and any bearer token are not pass-through."""
        ecr = replace(record(), kind=RegistryKind.ECR)
        assert not convert.token_to_proto(_token(AuthKind.BASIC, "AWS"), ecr).passthrough
        assert not convert.token_to_proto(_token(AuthKind.BEARER), record()).passthrough


class TestLoginToProto:
    def test_every_field_is_carried(self) -> None:
        """A login becomes a RegistryLogin with the record's place, its secret and flags."""
        login = MintedLogin(
            AuthKind.BASIC, "00000000-0000-0000-0000-000000000000", Secret("refresh-abc"), "",
            NOW, NOW + dt.timedelta(hours=1), "team/app", identity_token=True,
        )  # fmt: skip
        message = convert.login_to_proto(login, record())
        assert (message.registry, message.registry_host, message.registry_url) == (
            "registries/abc", "ghcr.io", "https://ghcr.io",
        )  # fmt: skip
        assert (message.username, message.secret) == (login.username, "refresh-abc")
        assert (message.identity_token, message.repository_scoped, message.passthrough) == (
            True, False, False,
        )  # fmt: skip
        assert message.expire_time.ToDatetime(tzinfo=dt.UTC) == NOW + dt.timedelta(hours=1)


class Aborted(Exception):
    """What the fake context's abort raises (grpc.aio raises AbortError)."""


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted


class TestServicerWithoutLogins:
    async def test_issue_registry_login_is_unimplemented(self) -> None:
        """A servicer built without a login use case answers UNIMPLEMENTED, saying so."""
        servicer = PullServicer(issuer=object())  # type: ignore[arg-type] # never called
        context = FakeContext()
        request = pull_pb2.IssueRegistryLoginRequest(image="r.example/team/app")
        with pytest.raises(Aborted):
            # A full grpc.aio ServicerContext is dozens of methods; this path calls abort() only.
            await servicer.IssueRegistryLogin(request, context)  # type: ignore[arg-type]
        assert context.aborted is not None
        assert context.aborted[0] is grpc.StatusCode.UNIMPLEMENTED
        assert "registry logins" in context.aborted[1]
