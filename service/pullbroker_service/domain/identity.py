"""Who is calling: the name taken from the client certificate, and the roles policy gives it."""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_service.domain.errors import Unauthenticated

ADMIN = "admin"
NODE = "node"
KNOWN_ROLES = frozenset({ADMIN, NODE})


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    name: the SPIFFE ID (URI SAN) if the certificate has one, else "CN=<common name>".
    roles: what the policy grants that name ("admin" may manage registries, "node" may pull).
    """

    name: str
    roles: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        return role in self.roles


def identity_name(spiffe_id: str | None, common_name: str | None) -> str:
    """The policy name of a certificate: its SPIFFE ID, else "CN=<cn>"."""
    if spiffe_id:
        return spiffe_id
    if common_name:
        return f"CN={common_name}"
    raise Unauthenticated(
        "the client certificate has neither a spiffe:// URI SAN nor a common name: "
        "issue it with one"
    )
