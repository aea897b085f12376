"""The pull-token use case: image reference in, short-lived repository-scoped token out.

Order matters: the reference is parsed, the registry chosen, its host compared with the
image's, and the policy consulted before anything leaves the broker; only then is a token
taken from the cache or minted (the credential is read from the secret backend on a miss only).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager

import structlog
from pullbroker_client import tracing
from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.reference import Reference, parse_reference
from pullbroker_client.secret import Secret

from pullbroker_service.app.lookup import load_credential, require_ready, resolve
from pullbroker_service.app.pod_identity import PodIdentityVerifier, identify_pod
from pullbroker_service.app.policy_memo import PolicyMemo
from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.domain.errors import (
    AmbiguousRegistry,
    HostMismatch,
    InvalidReference,
    RegistryNotFound,
    ScopeNotAllowed,
)
from pullbroker_service.domain.hosts import canonical_image_host
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import AuthKind, MintedToken, RegistryRecord
from pullbroker_service.domain.pod_identity import PodIdentity
from pullbroker_service.domain.policy import Decision
from pullbroker_service.domain.repository_globs import select
from pullbroker_service.infra.logging import debug_enabled as log_debug_enabled
from pullbroker_service.minting.base import pull_scope
from pullbroker_service.minting.bearer import is_basic_passthrough
from pullbroker_service.minting.by_kind import BEARER_KINDS, MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.store.base import MetadataStore

log = structlog.get_logger()


class TokenIssuer:
    """The PullService use case. Callers have been authorised (role node) already."""

    def __init__(
        self,
        store: MetadataStore,
        secrets: SecretBackend,
        minters: MintersByKind,
        cache: TokenCache,
        policy: PolicyProvider,
        *,
        pods: PodIdentityVerifier | None = None,
    ) -> None:
        self._store = store
        self._pods = pods
        self._secrets = secrets
        self._minters = minters
        self._cache = cache
        self._access = PullAccess(store, policy)

    async def issue(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedToken, RegistryRecord]:
        pod = identify_pod(self._pods, service_account_token)
        ref, record, decision = await self._access.check(caller, image, registry, pod)
        repository = ref.repository
        scope = pull_scope(repository)
        token, hit = await self._cache.get(
            (record.id, record.credential_version, scope),
            lambda: self._mint(record, repository),
            force_refresh=force_refresh,
            kind=record.kind,
        )
        if hands_out_credential(token, record):
            # The long-lived credential itself leaves the broker: audit every hand-out.
            log.warning(
                "basic_passthrough_used",
                identity=caller.name,
                registry_id=record.id,
                host=record.host,
                repository=repository,
                username=token.username,
            )
        if hit and not log_debug_enabled():
            return token, record
        (log.debug if hit else log.info)(
            "token_issued",
            identity=caller.name,
            registry_id=record.id,
            repository=repository,
            scope=scope,
            auth_kind=token.auth_kind.value,
            expires_at=token.expires_at.isoformat(),
            cache_hit=hit,
            force_refresh=force_refresh,
            rule=decision.rule.number if decision.rule else None,
            service_account=pod.service_account_ref if pod else None,
            pod=pod.pod_name if pod else None,
        )
        return token, record

    async def _mint(self, record: RegistryRecord, repository: str) -> MintedToken:
        return await mint_token(self._secrets, self._minters, record, repository)


async def mint_token(
    secrets: SecretBackend, minters: MintersByKind, record: RegistryRecord, repository: str
) -> MintedToken:
    """A new pull token for `repository` (the credential is read from the backend now)."""
    with mint_span(record, repository):
        credential = await load_credential(secrets, record)
        return await minters.for_kind(record.kind).mint(record, credential, repository)


def mint_span(record: RegistryRecord, repository: str) -> AbstractContextManager[tracing.SpanLike]:
    """The `pullbroker.mint` span around a cache miss's credential read and upstream mint."""
    return tracing.span(
        "pullbroker.mint",
        attributes={
            "pullbroker.registry.kind": str(record.kind),
            "pullbroker.registry.host": record.host,
            "pullbroker.repository": repository,
        },
    )


class PullAccess:
    """The checks before anything is issued for an image, in order: parse the reference,
    choose the registry record, compare hosts, consult the policy. No I/O beyond the store."""

    def __init__(self, store: MetadataStore, policy: PolicyProvider) -> None:
        self._store = store
        self._policy = policy if isinstance(policy, PolicyMemo) else PolicyMemo(policy)

    async def check(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        pod: PodIdentity | None = None,
    ) -> tuple[Reference, RegistryRecord, Decision]:
        """The parsed image, its record and the allowing decision; raises when refused."""
        ref = _parse(image)
        host = canonical_image_host(ref.registry_host)
        record = await self._choose(host, ref.repository, registry)
        if canonical_image_host(record.host) != host:
            raise HostMismatch(
                f"image {ref} is on host {host}, but registry {record.display_name!r} holds a "
                f"credential for {record.host}: pick the registry for {host}"
            )
        decision = self._policy.explain(caller.name, record, ref.repository, pod)
        if not decision.allowed:
            raise ScopeNotAllowed(
                f"identity {caller.name} may not pull {ref.repository} from registry "
                f"{record.display_name!r}: {decision.reason} (see policy.yaml)"
            )
        return ref, record, decision

    async def _choose(self, host: str, repository: str, registry: str | None) -> RegistryRecord:
        if registry:
            return require_ready(await resolve(self._store, registry))
        return choose_record(await self._store.find_by_host(host), host, repository)


def choose_record(found: Sequence[RegistryRecord], host: str, repository: str) -> RegistryRecord:
    """The record of `host` serving `repository` (domain/repository_globs.py); the refusal
    says what to do: RegistryNotFound when none serves it, AmbiguousRegistry on a tie."""
    if not found:
        raise RegistryNotFound(
            f"no registry is registered for host {host}: add one with `pullbroker registry add`"
        )
    selection = select(found, repository)
    if selection.chosen is not None:
        return selection.chosen
    if not selection.tied:
        served = "; ".join(f"{r.display_name!r}: {', '.join(r.repositories)}" for r in found)
        raise RegistryNotFound(
            f"no registry for host {host} serves repository {repository} ({served}): add a "
            "matching glob to a record's repositories, or add a record for it"
        )
    names = ", ".join(repr(r.display_name) for r in selection.tied)
    raise AmbiguousRegistry(
        f"several registries serve host {host} ({names}) equally for {repository}: name one "
        "in the request, or give the records repository globs (registry update "
        "--repositories) so that one matches more specifically"
    )


# Nodes ask for the same few images over and over; parsing is pure, so remember it.
@functools.lru_cache(maxsize=4096)
def _parse(image: str) -> Reference:
    try:
        return parse_reference(image)
    except registry_errors.InvalidReference as exc:
        raise InvalidReference(str(exc)) from exc


def hands_out_credential(token: MintedToken, record: RegistryRecord) -> bool:
    """Whether `token` is the stored long-lived credential (Basic pass-through).

    A BASIC token from a token-endpoint kind can only be pass-through; the cloud kinds' BASIC
    tokens (ECR's) are short-lived ones their minters obtained, and are not.
    """
    if is_basic_passthrough(token):
        return True
    return token.auth_kind is AuthKind.BASIC and record.kind in BEARER_KINDS
