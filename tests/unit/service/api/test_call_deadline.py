"""Every unary call has a server-side time limit, whatever deadline its client set."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from cryptography import x509
from pullbroker_service.api.interceptors import CallGuard

from tests.unit.service.api.test_identity import certificate

SERVICE = "pullbroker.v1.PullService"


class NodeContext:
    """A grpc.aio ServicerContext of a node that authenticated with a SPIFFE certificate."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        node = certificate(x509.UniformResourceIdentifier("spiffe://pullbroker.local/node/n1"))
        return {"transport_security_type": [b"ssl"], "x509_pem_cert": [node]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_trailing_metadata(self, _metadata: object) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str, _metadata: object) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


def guarded(behaviour: Any, seconds: float) -> Any:
    guard = CallGuard(lambda _name: frozenset({"node"}), max_call_seconds=seconds)
    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    return guard.wrap(SERVICE, "IssuePullToken", handler).unary_unary


class TestCallDeadline:
    """A hung call ends with DEADLINE_EXCEEDED; a quick one is untouched."""

    async def test_slow_call_is_cut_off(self) -> None:
        """A handler that outlives the limit is aborted with DEADLINE_EXCEEDED."""

        async def hang(_request: object, _context: object) -> str:
            await asyncio.sleep(30)
            return "never"

        context = NodeContext()
        with pytest.raises(grpc.aio.AbortError):
            await guarded(hang, 0.05)(object(), context)
        assert context.aborted is not None
        code, details = context.aborted
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "time limit" in details

    async def test_quick_call_returns_its_answer(self) -> None:
        """Within the limit the handler's response comes back unchanged."""

        async def answer(_request: object, _context: object) -> str:
            return "token"

        context = NodeContext()
        assert await guarded(answer, 5.0)(object(), context) == "token"
        assert context.aborted is None
