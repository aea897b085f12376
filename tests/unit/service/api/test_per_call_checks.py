"""Whatever the token hot path remembers, every call is still checked on its own: identity from
its own certificate, the policy in force now, the rate limit, and one audit line per token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from pullbroker.v1 import pull_pb2
from pullbroker_client.secret import Secret
from pullbroker_service.api.interceptors import CallGuard
from pullbroker_service.api.pull_servicer import PullServicer
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.policy_memo import PolicyMemo
from pullbroker_service.app.ratelimit import Limit, LimitKind, RateLimiter
from pullbroker_service.app.token_guard import GuardedTokenIssuer
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import BasicCredential, RegistryKind
from pullbroker_service.domain.policy import Policy
from pullbroker_service.minting.by_kind import MintersByKind

from tests.unit.service.api.test_identity import certificate
from tests.unit.service.conftest import ADMIN, Core

SERVICE = "pullbroker.v1.PullService"
IMAGE = "reg.example:5000/team/app:v1"
N1 = "spiffe://pullbroker.local/node/n1"
N2 = "spiffe://pullbroker.local/node/n2"
STRANGER = "spiffe://elsewhere.example/node/n3"


def policy(*nodes: str, repositories: tuple[str, ...] = ("team/*",)) -> Policy:
    rules: list[dict[str, Any]] = [{"identity": ADMIN, "roles": ["admin"]}]
    rules += [
        {"identity": n, "roles": ["node"], "registries": ["*"], "repositories": list(repositories)}
        for n in nodes
    ]
    return Policy.from_mapping({"rules": rules})


class SwitchablePolicy:
    """A policy provider whose policy a test replaces (as a file reload does)."""

    def __init__(self, current: Policy) -> None:
        self.policy = current

    def current(self) -> Policy:
        return self.policy


class PeerContext:
    """A grpc.aio ServicerContext of a peer that presented `pem`."""

    def __init__(self, pem: bytes) -> None:
        self._pem = pem
        self.aborted: grpc.StatusCode | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"ssl"], "x509_pem_cert": [self._pem]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_trailing_metadata(self, _metadata: object) -> None:
        pass

    def code(self) -> grpc.StatusCode | None:
        return self.aborted

    def details(self) -> str:
        return ""

    async def abort(self, code: grpc.StatusCode, _details: str, _metadata: object) -> None:
        self.aborted = code
        raise grpc.aio.AbortError()


def pem_of(spiffe_id: str) -> bytes:
    return certificate(x509.UniformResourceIdentifier(spiffe_id))


class Broker:
    """The guarded IssuePullToken handler over the real use case, audit sink and limiter."""

    def __init__(self, core: Core, tmp_path: Path, burst: int = 1000) -> None:
        self.policy = SwitchablePolicy(policy(N1, N2))
        memo = PolicyMemo(self.policy)
        self.audit = AuditSink(tmp_path / "audit.jsonl")
        limiter = RateLimiter(
            {LimitKind.ISSUE_PULL_TOKEN: Limit(per_second=1e-6, burst=burst)}, clock=lambda: 0.0
        )
        issuer = TokenIssuer(
            core.store, core.secrets, MintersByKind.with_bearer(core.minter), core.cache, memo
        )
        guarded = GuardedTokenIssuer(issuer, audit=self.audit, limiter=limiter)
        guard = CallGuard(memo.roles_for)
        self._call: Any = guard.wrap(
            SERVICE,
            "IssuePullToken",
            grpc.unary_unary_rpc_method_handler(PullServicer(guarded).IssuePullToken),
        ).unary_unary

    async def issue(self, pem: bytes) -> grpc.StatusCode:
        context = PeerContext(pem)
        try:
            await self._call(pull_pb2.IssuePullTokenRequest(image=IMAGE), context)
        except grpc.aio.AbortError:
            assert context.aborted is not None
            return context.aborted
        return grpc.StatusCode.OK

    def audited(self) -> list[tuple[str, str]]:
        """(identity, outcome) of every audit line so far."""
        self.audit.flush()
        lines = self.audit.path.read_text().splitlines()
        return [(e["identity"], e["outcome"]) for e in map(json.loads, lines)]


@pytest.fixture
async def broker(core: Core, tmp_path: Path) -> Broker:
    spec = RegistrySpec("acme", RegistryKind.GENERIC, "https://reg.example:5000")
    credential = BasicCredential("robot", Secret("stored-password"))
    await core.registries.create(
        Identity(ADMIN, frozenset({"admin"})), spec, credential, test=False
    )
    return Broker(core, tmp_path)


class TestEveryCallIsChecked:
    async def test_each_certificate_is_its_own_caller(self, broker: Broker) -> None:
        """Alternating certificates (their names remembered per PEM) are each their own
        identity, audited as such; a certificate the policy does not know is refused every
        time, however often known ones came before it."""
        n1, n2, stranger = pem_of(N1), pem_of(N2), pem_of(STRANGER)
        codes = [await broker.issue(pem) for pem in (n1, n2, stranger, n1, stranger, n2)]
        ok, denied = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
        assert codes == [ok, ok, denied, ok, denied, ok]
        assert broker.audited() == [
            (N1, "allowed"),
            (N2, "allowed"),
            (N1, "allowed"),
            (N2, "allowed"),
        ]

    async def test_revoked_policy_refuses_the_next_call(self, broker: Broker) -> None:
        """Decisions are remembered per policy object: a reload that narrows the repositories
        or drops the node's role refuses the very next call (audited as denied)."""
        n1 = pem_of(N1)
        assert await broker.issue(n1) == grpc.StatusCode.OK
        broker.policy.policy = policy(N1, N2, repositories=("other/*",))
        assert await broker.issue(n1) == grpc.StatusCode.PERMISSION_DENIED
        broker.policy.policy = policy(N2)
        assert await broker.issue(n1) == grpc.StatusCode.PERMISSION_DENIED
        broker.policy.policy = policy(N1)
        assert await broker.issue(n1) == grpc.StatusCode.OK
        assert broker.audited() == [(N1, "allowed"), (N1, "denied"), (N1, "allowed")]

    async def test_rate_limit_applies_per_call(self, core: Core, tmp_path: Path) -> None:
        """Cache hits still draw on the caller's bucket: past the burst a call is refused
        and audited as denied, while another identity's bucket is untouched."""
        spec = RegistrySpec("acme", RegistryKind.GENERIC, "https://reg.example:5000")
        credential = BasicCredential("robot", Secret("stored-password"))
        admin = Identity(ADMIN, frozenset({"admin"}))
        await core.registries.create(admin, spec, credential, test=False)
        broker = Broker(core, tmp_path, burst=3)
        n1, n2 = pem_of(N1), pem_of(N2)
        codes = [await broker.issue(n1) for _ in range(4)] + [await broker.issue(n2)]
        ok = grpc.StatusCode.OK
        assert codes == [ok, ok, ok, grpc.StatusCode.RESOURCE_EXHAUSTED, ok]
        assert broker.audited() == [(N1, "allowed")] * 3 + [(N1, "denied"), (N2, "allowed")]
        assert len(core.minter.mints) == 1  # all but the first were cache hits
