"""The registry-login use case: image reference in, a login a container runtime can use out.

The same checks as a pull token, in the same order and with the same code (app/tokens.py
`PullAccess`): parse the reference, choose the registry, compare hosts, consult the policy
for the image's repository. Only then is a login taken from the cache or minted.

Which registries have a login, and what it allows, is minting/runtime_logins.py's table. Two paths:

- the cloud kinds (ECR, GCR/GAR, ACR): their minter's `login`, cached under
  (registry id, credential version, "login"[:repository]) in the broker's TokenCache;
- token-endpoint kinds (generic, Docker Hub, GHCR, Quay, Harbor, public): a login only when
  the record allows Basic pass-through and its registry is Basic-only. Whether it is shows
  in the pull token minted for the repository, so that token is taken from (or put in) the
  cache under the very key IssuePullToken uses: a registry that turns out to speak Bearer
  costs one mint, shared with pulls, not one per refused login. A record that does not allow
  pass-through is refused without any I/O.

Every pass-through hand-out is logged (`basic_passthrough_used`) besides the audit event.
"""

from __future__ import annotations

import structlog
from pullbroker_client.registry.reference import Reference
from pullbroker_client.secret import Secret

from pullbroker_service.app.lookup import load_credential
from pullbroker_service.app.pod_identity import PodIdentityVerifier, identify_pod
from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.app.tokens import (
    PullAccess,
    hands_out_credential,
    mint_span,
    mint_token,
)
from pullbroker_service.domain.errors import FailedPrecondition
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import RegistryKind, RegistryRecord
from pullbroker_service.infra.logging import debug_enabled as log_debug_enabled
from pullbroker_service.minting.base import pull_scope
from pullbroker_service.minting.by_kind import BEARER_KINDS, MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.minting.runtime_logins import (
    LoginMinter,
    MintedLogin,
    login_minter,
    login_scope,
    no_login,
    passthrough_login,
)
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.store.base import MetadataStore

log = structlog.get_logger()


class LoginIssuer:
    """The IssueRegistryLogin use case. Callers have been authorised (role node) already.

    Built from what TokenIssuer is built from; give both the same TokenCache so a rotation
    or deletion (which invalidates the registry there) drops its logins too.
    """

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
        self._pods = pods
        self._secrets = secrets
        self._minters = minters
        self._cache = cache
        self._access = PullAccess(store, policy)

    async def login(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedLogin, RegistryRecord]:
        """The login for `image`, or FailedPrecondition when its registry has none."""
        pod = identify_pod(self._pods, service_account_token)
        ref, record, decision = await self._access.check(caller, image, registry, pod)
        if record.kind in BEARER_KINDS:
            login, hit = await self._passthrough(record, ref, force_refresh)
        else:
            login, hit = await self._cloud(record, ref, force_refresh)
        if login.passthrough:
            # The long-lived credential itself leaves the broker: audit every hand-out.
            log.warning(
                "basic_passthrough_used",
                identity=caller.name,
                registry_id=record.id,
                host=record.host,
                repository=ref.repository,
                username=login.username,
                registry_login=True,
            )
        if hit and not log_debug_enabled():
            return login, record
        (log.debug if hit else log.info)(
            "registry_login_issued",
            identity=caller.name,
            registry_id=record.id,
            repository=ref.repository,
            username=login.username,
            identity_token=login.identity_token,
            repository_scoped=login.repository_scoped,
            expires_at=login.expires_at.isoformat(),
            cache_hit=hit,
            force_refresh=force_refresh,
            rule=decision.rule.number if decision.rule else None,
        )
        return login, record

    async def _cloud(
        self, record: RegistryRecord, ref: Reference, force_refresh: bool
    ) -> tuple[MintedLogin, bool]:
        minter = login_minter(record.kind, self._minters.for_kind(record.kind))
        if minter is None:
            raise no_login(record, str(ref))
        repository = ref.repository
        found, hit = await self._cache.get(
            (record.id, record.credential_version, login_scope(record.kind, repository)),
            lambda: self._mint(minter, record, repository),
            force_refresh=force_refresh,
            kind=record.kind,
        )
        assert isinstance(found, MintedLogin)  # login keys hold logins only
        return found, hit

    async def _mint(self, minter: LoginMinter, record: RegistryRecord, repo: str) -> MintedLogin:
        with mint_span(record, repo):
            credential = await load_credential(self._secrets, record)
            return await minter.login(record, credential, repo)

    async def _passthrough(
        self, record: RegistryRecord, ref: Reference, force_refresh: bool
    ) -> tuple[MintedLogin, bool]:
        if record.kind is RegistryKind.PUBLIC:
            raise FailedPrecondition(
                f"registry {record.display_name!r} ({record.host}) holds no credential: "
                "runtimes pull its images anonymously, without a login"
            )
        if not record.allow_basic_passthrough:
            raise no_login(record, str(ref))
        repository = ref.repository
        token, hit = await self._cache.get(
            (record.id, record.credential_version, pull_scope(repository)),
            lambda: mint_token(self._secrets, self._minters, record, repository),
            force_refresh=force_refresh,
            kind=record.kind,
        )
        if not hands_out_credential(token, record):
            raise no_login(record, str(ref))
        return passthrough_login(token), hit
