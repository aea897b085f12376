"""The last step of a probe: use the minted token once, as a pull would.

A token endpoint hands out tokens that grant less than asked (or nothing) instead of
refusing, so only the registry's answer to the token tells "allowed" from "not allowed".
`GET /v2/<repository>/tags/list?n=1` is the cheapest read every registry serves, does not
count as a pull on Docker Hub, and carries its quota headers when there are any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.auth import basic_authorization
from pullbroker_client.registry.errors import error_for_response
from pullbroker_client.registry.transport import Transport
from pullbroker_client.secret import Secret

from pullbroker_service.domain.model import AuthKind, MintedToken, RegistryRecord
from pullbroker_service.minting.upstream_backoff import Quota

QuotaObserver = Callable[[Mapping[str, str]], Quota | None]


async def verify_token(
    record: RegistryRecord,
    transport: Transport,
    token: MintedToken,
    repository: str,
    observe: QuotaObserver,
) -> str:
    """What the registry says to `token`, as a message; raises the client's errors."""
    authorization = authorization_of(token)
    if not repository:
        if token.auth_kind is AuthKind.BASIC:
            await _expect_ok(transport, f"{record.url}/v2/", authorization, "GET /v2/")
        return f"registry {record.host} accepted the credential ({token.auth_kind.value})"
    url = f"{record.url}/v2/{repository}/tags/list"
    response = await transport.request(
        "GET", url, params={"n": "1"}, authorization=authorization, limit=1024 * 1024
    )
    quota = observe(response.headers)
    said = f" (pull quota: {quota.describe()})" if quota is not None else ""
    if response.status_code == 200:
        return (
            f"registry {record.host} accepted the credential and allows pull on {repository}{said}"
        )
    if response.status_code == 404:
        return (
            f"registry {record.host} accepted the credential; repository {repository} was not "
            f"found (not pushed yet, or spelled differently: check the namespace and its "
            f"case){said}"
        )
    if response.status_code in (401, 403) and token.auth_kind is AuthKind.BEARER:
        raise registry_errors.NotAllowed(f"registry {record.host} refused pull on {repository}")
    raise error_for_response(
        response.status_code,
        response.content,
        host=response.host,
        subject=f"the tags of {repository}",
        retry_after=response.retry_after,
    )


def authorization_of(token: MintedToken) -> Secret | None:
    """The Authorization header value a node would send with `token`."""
    if token.auth_kind is AuthKind.BEARER:
        return Secret(f"Bearer {token.token.reveal()}")
    if token.auth_kind is AuthKind.BASIC:
        return basic_authorization(token.username, token.token)
    return None


async def _expect_ok(
    transport: Transport, url: str, authorization: Secret | None, what: str
) -> None:
    response = await transport.request("GET", url, authorization=authorization, limit=64 * 1024)
    if response.status_code != 200:
        raise error_for_response(
            response.status_code, response.content, host=response.host, subject=what
        )
