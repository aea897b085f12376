"""What the daemon hands the runtimes: registry logins from the broker's IssueRegistryLogin.

Why "logins" and not pull tokens: docker, podman, skopeo, containerd and the kubelet never
send a token they are given to the registry. Given credentials for a registry (`{Username,
Secret}` from a docker credential helper, `{username, password}` from a kubelet provider or
a dockerconfigjson Secret), they always run the token flow themselves: ping, read the
registry's `WWW-Authenticate` realm, then ask *that realm* for a token per repository, with
Basic auth, or with Secret as an OAuth2 refresh token when Username is `<token>`. So what
reaches a runtime must be a credential the registry's own auth accepts - a *login* - which
the broker mints for that purpose (IssueRegistryLogin; see the broker's minting/runtime_logins.py):

    ECR        AWS + a 12-hour token (with a role: limited to the repository)
    GCR, GAR   oauth2accesstoken + the service account's OAuth2 access token (~1 hour)
    ACR        a service principal's refresh token, an *identity token* (`identity_token`)
    Basic-only registries whose record allows it: the stored credential itself
               (`passthrough`, audited by the broker): memory only, never a file

Registries that give nodes only repository-scoped bearer tokens (Docker Hub, GHCR, Quay,
Harbor, generic) have no login: the broker refuses with FAILED_PRECONDITION saying how to
pull with `pullbroker-sidecar pull IMAGE` for each runtime (it uses the tokens itself), and
the daemon answers `no_login` with that message.

Logins are cached in memory per (repository, registry record) until shortly before their
expiry, and concurrent misses for one key make one broker call.

A docker credential helper is asked per registry, never per repository, while the broker
decides per repository: the daemon is told which images the node runs (`run --image`),
and answers for a registry with the login the broker grants for one of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from pullbroker_client.broker import BrokerCallError, IssuedRegistryLogin
from pullbroker_client.errors import ClientError
from pullbroker_client.registry.reference import DOCKER_HUB, Reference, parse_reference
from pullbroker_client.secret import Secret

from pullbroker_sidecar.daemon.protocol import BAD_REQUEST, DENIED, NO_LOGIN, NOT_FOUND, UNAVAILABLE
from pullbroker_sidecar.errors import DaemonError
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.tokens import DEFAULT_LIFETIME, RegistryLoginIssuer, renew_at

_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


class NoLogin(DaemonError):
    """No login for that request; `code` is a protocol error code, str() says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Login:
    """A credential the registry's own auth accepts, for `registry_host`.

    `domain` is the registry as image references name it (`docker.io`, `host:port`).
    identity_token: `secret` is an OAuth2 refresh token, not a password. passthrough: it is
    the registry's long-lived credential (never write it anywhere). repository_scoped: the
    registry limits it to `repository`.
    """

    registry: str
    registry_host: str
    domain: str
    repository: str
    username: str
    secret: Secret
    expires_at: float
    identity_token: bool = False
    passthrough: bool = False
    repository_scoped: bool = False

    def remaining(self, now: float) -> float:
        """Seconds of life left."""
        return max(0.0, self.expires_at - now)


def normalize_host(server: str) -> str:
    """The registry host a helper was asked about: scheme, path and Docker Hub aliases go."""
    text = server.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


@dataclass
class _Entry:
    login: IssuedRegistryLogin
    renew_at: float


class LoginCache:
    """Broker logins in memory per (repository, registry), renewed shortly before expiry."""

    def __init__(
        self,
        issuer: RegistryLoginIssuer,
        *,
        clock: Callable[[], float] = time.time,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self._issuer = issuer
        self._metrics = metrics
        self._clock = clock
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._pending: dict[tuple[str, str | None], asyncio.Future[IssuedRegistryLogin]] = {}
        self.broker_calls = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        ref: Reference,
        registry: str | None = None,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin:
        """A login for `ref`'s repository: cached, or from the broker (one call per miss).

        With a pod's service-account token the broker decides for that pod, so the answer is
        never cached here: another pod on this node may not be allowed it (the kubelet caches
        it per service account itself, serviceAccountTokenCacheType: ServiceAccount).
        """
        if service_account_token is not None:
            self.broker_calls += 1
            if self._metrics is not None:
                self._metrics.refreshed("registry_login", "pod")
            return await self._issuer.issue_registry_login(
                str(ref), registry=registry or "", service_account_token=service_account_token
            )
        key = (ref.name, registry)
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.renew_at:
            return entry.login
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[IssuedRegistryLogin] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        if self._metrics is not None:
            self._metrics.refreshed("registry_login", "first" if entry is None else "renewal")
        try:
            self.broker_calls += 1
            login = await self._issuer.issue_registry_login(str(ref), registry=registry or "")
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters, if any, get it through the await
            raise
        finally:
            self._pending.pop(key, None)
        now = self._clock()
        self._entries[key] = _Entry(login, renew_at(login.expires_at.timestamp(), now))
        future.set_result(login)
        return login

    def clear(self) -> None:
        """Forget every cached login (the next request for each asks the broker)."""
        self._entries.clear()


class Logins:
    """Answers the daemon's `login` and `image_login` requests."""

    def __init__(
        self,
        cache: LoginCache,
        images: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self._clock = clock
        self._images = [parse_reference(i) for i in images]
        self._usernames: dict[str, str] = {}

    def registries(self) -> dict[str, str]:
        """Hosts this daemon can answer for, with the last username handed out (or "")."""
        hosts = {ref.domain: "" for ref in self._images}
        hosts.update(self._usernames)
        return hosts

    async def for_image(self, image: str, service_account_token: Secret | None = None) -> Login:
        """The login the broker grants for `image` (NoLogin says why there is none)."""
        try:
            ref = parse_reference(image)
        except ClientError as exc:
            raise NoLogin(BAD_REQUEST, str(exc)) from None
        try:
            issued = await self.cache.get(ref, service_account_token=service_account_token)
        except BrokerCallError as exc:
            raise _refusal(exc, str(ref)) from None
        login = self._login(issued, ref)
        self._usernames[ref.domain] = login.username
        return login

    async def for_host(self, server: str) -> Login:
        """The login for a registry, through one of the images declared for it."""
        host = normalize_host(server)
        candidates = [ref for ref in self._images if ref.domain == host]
        if not candidates:
            raise NoLogin(
                NOT_FOUND,
                f"no image of {host} is declared to this sidecar (`pullbroker-sidecar run "
                "--image`): the credential helper answers only for registries it serves",
            )
        refusals: list[NoLogin] = []
        for ref in candidates:
            try:
                return await self.for_image(str(ref))
            except NoLogin as exc:
                refusals.append(exc)
        raise min(refusals, key=lambda r: _PRIORITY.get(r.code, 9))

    def _login(self, issued: IssuedRegistryLogin, ref: Reference) -> Login:
        expires_at = issued.expires_at.timestamp()
        if expires_at <= 0:
            expires_at = self._clock() + DEFAULT_LIFETIME
        return Login(
            registry=issued.registry,
            registry_host=issued.registry_host or ref.registry_host,
            domain=ref.domain,
            repository=ref.repository,
            username=issued.username,
            secret=issued.secret,
            expires_at=expires_at,
            identity_token=issued.identity_token,
            passthrough=issued.passthrough,
            repository_scoped=issued.repository_scoped,
        )


# When several declared images all fail, the most telling reason wins.
_PRIORITY = {DENIED: 0, NO_LOGIN: 1, UNAVAILABLE: 2, NOT_FOUND: 3, BAD_REQUEST: 4}


def _refusal(exc: BrokerCallError, image: str) -> NoLogin:
    if exc.code is grpc.StatusCode.PERMISSION_DENIED:
        return NoLogin(DENIED, f"the broker's policy does not let this node pull {image}: {exc}")
    if exc.code is grpc.StatusCode.NOT_FOUND:
        return NoLogin(NOT_FOUND, f"the broker has no registry for {image}: {exc}")
    if exc.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return NoLogin(BAD_REQUEST, str(exc))
    if exc.code is grpc.StatusCode.FAILED_PRECONDITION:
        # The registry has no login for runtimes (the message says how to pull instead), or
        # its record cannot be used now.
        return NoLogin(NO_LOGIN, f"no login for {image}: {exc}")
    if exc.code is grpc.StatusCode.UNIMPLEMENTED:
        return NoLogin(
            NO_LOGIN,
            f"the broker does not issue registry logins (IssueRegistryLogin) for {image}: "
            "upgrade it, or pull with `pullbroker-sidecar pull IMAGE --dest docker-daemon`",
        )
    if exc.temporary:
        return NoLogin(UNAVAILABLE, f"the broker could not be reached for {image}: {exc}")
    return NoLogin(NO_LOGIN, f"the broker issued nothing for {image}: {exc}")
