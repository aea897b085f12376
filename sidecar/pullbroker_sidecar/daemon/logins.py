"""What the daemon hands the runtimes: registry logins made from the broker's pull tokens.

Why "logins" and not the tokens themselves: docker, podman, skopeo, containerd and the
kubelet never send a token they are given to the registry. Given credentials for a
registry (`{Username, Secret}` from a docker credential helper, `{username, password}`
from a kubelet provider or a dockerconfigjson Secret), they always run the token flow
themselves: ping, read the registry's `WWW-Authenticate` realm, then ask *that realm* for
a token per repository, with Basic auth, or with Secret as an OAuth2 refresh token when
Username is `<token>`. (dockerd's `registrytoken` is reachable only through the Engine
API, and containerd's CRI ignores `registry_token`.) So what reaches a runtime must be a
credential the registry's own auth accepts - a *login*. A repository-scoped bearer token
is not one, nor is one token with several `repository:X:pull` scopes: the realm rejects
it as a password and as a refresh token alike, although the registry itself would accept
it (tests/integration/nodes/test_podman_skopeo.py shows this with skopeo).

Today the broker's `IssuePullToken` answers with a login only where the registry's
short-lived credential is itself Basic: ECR (`AWS` + a 12-hour token; with a role, limited
to the requested repositories by an STS session policy), and Basic-only registries whose
record allows audited pass-through (the record's own credential: it cannot be limited to a
repository). Those are handed out from memory until shortly before they expire. For
registries that give nodes bearer tokens (Docker Hub, GHCR, Quay, Harbor, generic, GAR,
ACR) the daemon answers `no_login` and says how to pull instead: `pullbroker-sidecar pull
IMAGE --dest docker-daemon` or `containerd[:NS]` use the repository-scoped token
themselves. A login for those registries needs the broker to mint one the realm accepts
(GAR's `oauth2accesstoken` + access token, ACR's refresh token, a registry's offline
refresh token where the record allows it): a new RPC, not something a node can derive.

Tokens are cached in memory per (repository, registry record) until shortly before their
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
from pullbroker_client.broker import BrokerCallError, IssuedPullToken
from pullbroker_client.errors import ClientError
from pullbroker_client.registry.reference import DOCKER_HUB, Reference, parse_reference
from pullbroker_client.secret import Secret

from pullbroker_sidecar.daemon.protocol import BAD_REQUEST, DENIED, NO_LOGIN, NOT_FOUND, UNAVAILABLE
from pullbroker_sidecar.tokens import DEFAULT_LIFETIME, RENEW_BEFORE, PullTokenIssuer

_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


class NoLogin(Exception):
    """No login for that request; `code` is a protocol error code, str() says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Login:
    """A credential the registry's own auth accepts, for `registry_host`.

    `domain` is the registry as image references name it (`docker.io`, `host:port`).
    """

    registry: str
    registry_host: str
    domain: str
    repository: str
    username: str
    secret: Secret
    expires_at: float

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
    token: IssuedPullToken
    renew_at: float


class TokenCache:
    """Pull tokens in memory per (repository, registry), renewed shortly before expiry."""

    def __init__(self, issuer: PullTokenIssuer, *, clock: Callable[[], float] = time.time) -> None:
        self._issuer = issuer
        self._clock = clock
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._pending: dict[tuple[str, str | None], asyncio.Future[IssuedPullToken]] = {}
        self.broker_calls = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, ref: Reference, registry: str | None = None) -> IssuedPullToken:
        """A token for `ref`'s repository: cached, or from the broker (one call per miss)."""
        key = (ref.name, registry)
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.renew_at:
            return entry.token
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[IssuedPullToken] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.broker_calls += 1
            token = await self._issuer.issue_pull_token(str(ref), registry=registry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters, if any, get it through the await
            raise
        finally:
            self._pending.pop(key, None)
        self._entries[key] = _Entry(token, _renew_at(token, self._clock()))
        future.set_result(token)
        return token

    def clear(self) -> None:
        """Forget every cached token (the next request for each asks the broker)."""
        self._entries.clear()


def _renew_at(token: IssuedPullToken, now: float) -> float:
    expires_at = token.expires_at.timestamp()
    if expires_at <= 0:
        expires_at = now + DEFAULT_LIFETIME
    lifetime = max(0.0, expires_at - now)
    return expires_at - min(RENEW_BEFORE, lifetime / 4)


class Logins:
    """Answers the daemon's `login` and `image_login` requests."""

    def __init__(
        self,
        cache: TokenCache,
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

    async def for_image(self, image: str) -> Login:
        """The login the broker grants for `image` (NoLogin says why there is none)."""
        try:
            ref = parse_reference(image)
        except ClientError as exc:
            raise NoLogin(BAD_REQUEST, str(exc)) from None
        try:
            token = await self.cache.get(ref)
        except BrokerCallError as exc:
            raise _refusal(exc, str(ref)) from None
        login = self._login(token, ref)
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

    def _login(self, token: IssuedPullToken, ref: Reference) -> Login:
        if token.auth_kind != "basic":
            if token.auth_kind == "anonymous":
                raise NoLogin(NOT_FOUND, f"{ref.domain} serves {ref.repository} anonymously")
            raise NoLogin(
                NO_LOGIN,
                f"registry {ref.domain} gives this node repository-scoped bearer tokens, which "
                "container runtimes cannot use as a login (they run the registry's token flow "
                f"themselves): pull with `pullbroker-sidecar pull {ref} --dest docker-daemon` "
                "(or containerd[:NAMESPACE]) instead",
            )
        expires_at = token.expires_at.timestamp()
        if expires_at <= 0:
            expires_at = self._clock() + DEFAULT_LIFETIME
        return Login(
            registry=token.registry,
            registry_host=token.registry_host or ref.registry_host,
            domain=ref.domain,
            repository=ref.repository,
            username=token.username,
            secret=token.token,
            expires_at=expires_at,
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
    if exc.temporary:
        return NoLogin(UNAVAILABLE, f"the broker could not be reached for {image}: {exc}")
    return NoLogin(NO_LOGIN, f"the broker issued nothing for {image}: {exc}")
