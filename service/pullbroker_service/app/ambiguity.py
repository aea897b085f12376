"""Several records of one host must not tie for a repository: the check create and update
hand to the store (a HostCheck), which runs it atomically with the write."""

from __future__ import annotations

from collections.abc import Sequence

from pullbroker_service.domain.errors import AlreadyExists, AmbiguousRegistry
from pullbroker_service.domain.model import RecordState, RegistryRecord
from pullbroker_service.domain.repository_globs import Conflict, conflicts
from pullbroker_service.store.base import HostCheck


def ambiguity_check(
    host: str, display_name: str, repositories: tuple[str, ...], own_id: str = ""
) -> HostCheck:
    """A HostCheck raising AmbiguousRegistry when a record with `repositories` would tie with
    another record of `host` for some repository (domain/repository_globs.py): a pull naming
    no record could then not be served. The message says which record and how to tell them
    apart."""

    def check(records: Sequence[RegistryRecord]) -> None:
        others = [r for r in records if r.id != own_id]
        # A record of the same name is refused here, not left to the store's unique index:
        # a rename committing while this write waits on the index would free the name, and
        # the write would land beside the renamed record without its globs being compared.
        if any(r.display_name == display_name for r in others):
            raise AlreadyExists(
                f"a registry named {display_name!r} already exists: choose another display_name"
            )
        found = conflicts(repositories, others)
        if found:
            pending = {r.display_name for r in others if r.state is RecordState.PENDING}
            raise _ambiguous(host, display_name, found[0], found[0].other in pending)

    return check


def _ambiguous(
    host: str, display_name: str, clash: Conflict, other_pending: bool
) -> AmbiguousRegistry:
    if clash.glob or clash.other_glob:
        overlap = (
            f"repository globs {clash.glob!r} (this one) and {clash.other_glob!r} (of "
            f"{clash.other!r}) match {clash.example!r} equally specifically"
        )
    else:
        overlap = "neither has repository globs, so both serve every repository"
    if other_pending:
        return AmbiguousRegistry(
            f"registry {display_name!r} would make host {host} ambiguous with registry "
            f"{clash.other!r}, which is still being created (or rolled back after a failed "
            f"create): {overlap}. Retry in a minute; if {clash.other!r} then exists, give the "
            "records repository globs that tell them apart"
        )
    return AmbiguousRegistry(
        f"registry {display_name!r} would make host {host} ambiguous with registry "
        f"{clash.other!r}: {overlap}. Give the records repository globs that tell them "
        f"apart, e.g. `--repositories 'acme/*'` on this one and `pullbroker registry update "
        f"{clash.other} --repositories 'other/*'` (a more specific glob wins a repository "
        "both match)"
    )
