"""PullService: short-lived, repository-scoped pull tokens for nodes (role: node), and
registry logins for the container runtimes on them."""

from __future__ import annotations

from typing import Protocol

import grpc
from pullbroker.v1 import pull_pb2, pull_pb2_grpc
from pullbroker_client.secret import Secret

from pullbroker_service.api import convert
from pullbroker_service.api.context import Context
from pullbroker_service.api.interceptors import current_caller
from pullbroker_service.app.pullable import Pullable
from pullbroker_service.app.token_guard import LoginIssuing, TokenIssuing
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import MintedToken, RegistryRecord

# The PullToken messages of recently served (token, record) pairs. On a cache hit the issuer
# returns the very same objects, so the message is built once per minted token, not per call.
_MAX_MESSAGES = 4096


class PullableListing(Protocol):
    """What ListPullableRegistries needs (app/pullable.py's PullableRegistries)."""

    async def pullable(self, caller: Identity) -> list[Pullable]: ...


class PullServicer(pull_pb2_grpc.PullServiceServicer):
    def __init__(
        self,
        issuer: TokenIssuing,
        logins: LoginIssuing | None = None,
        pullable: PullableListing | None = None,
    ) -> None:
        """`logins` None: IssueRegistryLogin answers UNIMPLEMENTED; `pullable` None:
        ListPullableRegistries does."""
        self._issuer = issuer
        self._logins = logins
        self._pullable = pullable
        self._messages: dict[
            tuple[int, int], tuple[MintedToken, RegistryRecord, pull_pb2.PullToken]
        ] = {}

    async def IssuePullToken(
        self, request: pull_pb2.IssuePullTokenRequest, context: Context
    ) -> pull_pb2.PullToken:
        image = _image(request)
        token, record = await self._issuer.issue(
            current_caller(),
            image,
            request.registry.strip() or None,
            request.force_refresh,
            _service_account_token(request),
        )
        return self._message(token, record)

    async def IssueRegistryLogin(
        self, request: pull_pb2.IssueRegistryLoginRequest, context: Context
    ) -> pull_pb2.RegistryLogin:
        if self._logins is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "this broker is not set up to issue registry logins"
            )
        assert self._logins is not None  # abort raised
        image = _image(request)
        login, record = await self._logins.login(
            current_caller(),
            image,
            request.registry.strip() or None,
            request.force_refresh,
            _service_account_token(request),
        )
        return convert.login_to_proto(login, record)

    async def ListPullableRegistries(
        self, request: pull_pb2.ListPullableRegistriesRequest, context: Context
    ) -> pull_pb2.ListPullableRegistriesResponse:
        if self._pullable is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "this broker does not list pullable registries"
            )
        assert self._pullable is not None  # abort raised
        found = await self._pullable.pullable(current_caller())
        return pull_pb2.ListPullableRegistriesResponse(
            registries=[
                pull_pb2.PullableRegistry(
                    registry=p.record.resource_name,
                    host=p.record.host,
                    url=p.record.url,
                    repositories=list(p.repositories),
                    registry_ca_pem=p.record.registry_ca_pem,
                )
                for p in found
            ]
        )

    def _message(self, token: MintedToken, record: RegistryRecord) -> pull_pb2.PullToken:
        key = (id(token), id(record))
        built = self._messages.get(key)
        # Identity, not equality, and both objects are held by the entry, so an id cannot be
        # reused by another object while its entry exists.
        if built is not None and built[0] is token and built[1] is record:
            return built[2]
        if len(self._messages) >= _MAX_MESSAGES:
            self._messages.clear()
        message = convert.token_to_proto(token, record)
        self._messages[key] = (token, record, message)
        return message


def _image(request: pull_pb2.IssuePullTokenRequest | pull_pb2.IssueRegistryLoginRequest) -> str:
    """The image as asked for; the use case's guard checks it (so a refusal is audited)."""
    return request.image.strip()


def _service_account_token(
    request: pull_pb2.IssuePullTokenRequest | pull_pb2.IssueRegistryLoginRequest,
) -> Secret | None:
    """The pod's service-account token, if the node sent one (a Secret from here on)."""
    token = request.service_account_token.strip()
    return Secret(token) if token else None
