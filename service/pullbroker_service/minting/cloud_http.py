"""HTTP shared by the cloud minters (Google, Azure): OAuth form posts and the registry's own
token realm, with TLS trust always explicit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from pullbroker_client.jsonlimits import loads_bounded
from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.addresses import DialPolicy
from pullbroker_client.registry.auth import TOKEN_BODY_LIMIT, ping
from pullbroker_client.registry.challenge import Challenge
from pullbroker_client.registry.errors import clean, error_for_response
from pullbroker_client.registry.guarded_backend import (
    GuardedBackend,
    guarded_transport,
    no_cookies,
)
from pullbroker_client.registry.reference import check_repository
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.registry.transport import (
    Transport,
    display_host,
    parse_retry_after,
    translate,
)
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import UpstreamProtocolError
from pullbroker_service.domain.model import MintedToken, RegistryRecord
from pullbroker_service.minting.upstream import record_label


@dataclass(frozen=True)
class OAuthAnswer:
    """An OAuth endpoint's answer: status, the JSON object it sent ({} if none), the host."""

    status: int
    document: dict[str, Any] = field(repr=False)  # may hold tokens
    host: str
    retry_after: float | None


def oauth_error_code(answer: OAuthAnswer) -> str:
    """The answer's short `error` code (OAuth2) or first registry error code, cleaned."""
    code = answer.document.get("error")
    if not isinstance(code, str):
        errors = answer.document.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else {}
        code = first.get("code") if isinstance(first, dict) else None
    return clean(code, 64) if isinstance(code, str) else f"HTTP {answer.status}"


def checked_repository(repository: str) -> str:
    """`repository` if it is a valid repository path, "" for none; nothing else reaches a scope."""
    return check_repository(repository) if repository else ""


_JSON = "application/json"
_MAX_ANSWER = TOKEN_BODY_LIMIT  # an OAuth answer is a few KiB, like a registry token's


class CloudHttp:
    """HTTP for the cloud minters. TLS trust is always explicit, never the environment.

    OAuth endpoints take form POSTs, which the registry Transport does not send, so this class
    keeps its own httpx clients for them (same explicit SSLContext, no redirects, no proxies).
    Every connection, to the registry or to an OAuth endpoint, passes `dial_policy`.
    """

    def __init__(self, timeout: float, dial_policy: DialPolicy) -> None:
        self._timeout = timeout
        self._dial_policy = dial_policy
        self._oauth: dict[str, httpx.AsyncClient] = {}
        self._registry: dict[str, Transport] = {}

    def registry_transport(self, registry: RegistryRecord) -> Transport:
        transport = self._registry.get(registry.registry_ca_pem)
        if transport is None:
            transport = Transport(
                ca_pem=registry.registry_ca_pem or None,
                timeout=self._timeout,
                dial_policy=self._dial_policy,
            )
            self._registry[registry.registry_ca_pem] = transport
        return transport

    async def post_form(
        self,
        url: str,
        form: dict[str, str],
        *,
        ca_pem: str | None,
        authorization: Secret | None = None,
    ) -> OAuthAnswer:
        """POST an urlencoded form; the answer whatever its status (transport errors raise)."""
        target = httpx.URL(url)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if authorization is not None:
            headers["Authorization"] = authorization.reveal()
        body = bytearray()
        try:
            async with self._client(ca_pem or "").stream(
                "POST", target, content=urlencode(form).encode(), headers=headers
            ) as response:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_ANSWER:
                        raise UpstreamProtocolError(
                            f"{display_host(target)} answered more than {_MAX_ANSWER} bytes "
                            "where a token was expected"
                        )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise translate(exc, display_host(target)) from exc
        try:
            document = loads_bounded(bytes(body))
        except ValueError:
            document = {}
        return OAuthAnswer(
            response.status_code,
            document if isinstance(document, dict) else {},
            display_host(target),
            parse_retry_after(response.headers.get("retry-after")),
        )

    async def bearer_challenge(self, registry: RegistryRecord) -> Challenge:
        """The registry's Bearer challenge; its realm must be on the registry's own host."""
        challenges = await ping(self.registry_transport(registry), registry.url)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is None:
            offered = ", ".join(sorted({c.scheme for c in challenges})) or "no authentication"
            raise UpstreamProtocolError(
                f"registry {registry.host} offers {offered}, not bearer token auth (registry "
                f"{record_label(registry)}): check the url is the cloud registry's"
            )
        realm = urlsplit(bearer.realm or "")
        realm_host = realm.hostname
        if realm.scheme != "https":
            raise UpstreamProtocolError(
                f"registry {registry.host} names a token realm that is not https: refusing to "
                "send cloud credentials to it"
            )
        if realm_host is None or realm_host.lower() != urlsplit(registry.url).hostname:
            raise UpstreamProtocolError(
                f"registry {registry.host} names a token realm on another host "
                f"({realm_host or 'none'}): refusing to send cloud credentials there"
            )
        return bearer

    async def verify_pull(self, registry: RegistryRecord, token: MintedToken, repo: str) -> str:
        """Use a BEARER token once, so a probe reports what a pull would meet."""
        bearer = Secret(f"Bearer {token.token.reveal()}")
        url = f"{registry.url}/v2/{repo}/tags/list" if repo else f"{registry.url}/v2/"
        params = {"n": "1"} if repo else None
        transport = self.registry_transport(registry)
        response = await transport.request("GET", url, params=params, authorization=bearer)
        if response.status_code in (200, 404):
            what = f"allows pull on {repo}" if repo else "accepted the token"
            if response.status_code == 404:
                what = f"has no tags in {repo} yet (or no such repository)"
            return f"registry {registry.host} {what}"
        if response.status_code in (401, 403):
            raise registry_errors.NotAllowed(f"registry {registry.host} refused pull on {repo}")
        raise error_for_response(
            response.status_code,
            response.content,
            host=response.host,
            subject=f"the tags of {repo}",
            retry_after=response.retry_after,
        )

    async def aclose(self) -> None:
        clients, self._oauth = list(self._oauth.values()), {}
        transports, self._registry = list(self._registry.values()), {}
        for http_client in clients:
            await http_client.aclose()
        for transport in transports:
            await transport.aclose()

    def _client(self, ca_pem: str) -> httpx.AsyncClient:
        http_client = self._oauth.get(ca_pem)
        if http_client is None:
            # No redirects are followed here; the one connection passes the dial guard.
            backend = GuardedBackend(self._dial_policy)
            http_client = httpx.AsyncClient(
                transport=guarded_transport(ssl_context(ca_pem or None), backend),
                trust_env=False,
                cookies=no_cookies(),
                follow_redirects=False,
                timeout=httpx.Timeout(self._timeout),
            )
            self._oauth[ca_pem] = http_client
        return http_client
