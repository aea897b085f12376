"""AuditService (role admin): the shared audit trail of every replica, read from the database.

Without a database there is no shared trail: the call is FAILED_PRECONDITION naming the
audit file on the broker's host, which `pullbroker audit tail --file` reads.
"""

from __future__ import annotations

from pullbroker.v1 import audit_pb2, audit_pb2_grpc

from pullbroker_service.api.context import Context
from pullbroker_service.domain.errors import FailedPrecondition, InvalidArgument
from pullbroker_service.store.audit_trail import AuditQuery, AuditTrail

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_OUTCOMES = ("", "allowed", "denied", "failed")
_MAX_FILTER = 1024


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: AuditTrail | None) -> None:
        self._trail = trail

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        if self._trail is None:
            raise FailedPrecondition(
                "this broker has no database, so no shared audit trail: read the audit file "
                "on its host (`pullbroker audit tail --file <home>/audit/audit.jsonl`)"
            )
        query = _query(request)
        found = await self._trail.read(query)
        events = [
            audit_pb2.AuditEvent(sequence=e.seq, **{k: e.fields.get(k, "") for k in _FIELDS})
            for e in found
        ]
        after = events[-1].sequence if events else request.after_sequence
        return audit_pb2.ListAuditEventsResponse(events=events, next_after_sequence=after)


_FIELDS = tuple(f.name for f in audit_pb2.AuditEvent.DESCRIPTOR.fields if f.name != "sequence")


def _query(request: audit_pb2.ListAuditEventsRequest) -> AuditQuery:
    if request.page_size < 0 or request.after_sequence < 0:
        raise InvalidArgument("page_size and after_sequence must not be negative")
    if request.outcome not in _OUTCOMES:
        raise InvalidArgument("outcome must be allowed, denied or failed")
    if max(len(request.identity), len(request.registry)) > _MAX_FILTER:
        raise InvalidArgument(f"filters are at most {_MAX_FILTER} characters")
    return AuditQuery(
        after=request.after_sequence,
        limit=min(request.page_size or DEFAULT_PAGE, MAX_PAGE),
        last=request.last,
        identity=request.identity,
        registry=request.registry,
        outcome=request.outcome,
    )
