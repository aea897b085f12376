"""The token server's HTTP side: the handler it runs on the harness HTTPSServer, and what
it records about each request.

The server (tests/harness/https_server.py) decodes `Transfer-Encoding: chunked` bodies,
which Go clients (skopeo, podman) use for the OAuth2 POST.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.harness.https_server import Handler, Reply, Request


@dataclass(frozen=True)
class TokenRequest:
    """What the token server saw for one request (no secrets)."""

    method: str
    user: str | None
    scopes: tuple[str, ...]
    status: int
    had_authorization: bool
    grant_type: str | None = None
    offline: bool = False
    service: str | None = None
    chunked: bool = False
    jti: str | None = None


@dataclass
class Failure:
    """An injected failure still to be served."""

    status: int
    remaining: int
    retry_after: int | None


@dataclass
class Outcome:
    """The response to send and what to record about it."""

    status: int
    body: dict[str, Any]
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    jti: str | None = None


class Unauthorized(Exception):
    """Bad or unknown credentials; carries the claimed user name (never the password)."""

    def __init__(self, user: str | None = None) -> None:
        super().__init__("unauthorized")
        self.user = user


class TokenBackend(Protocol):
    """What the handler needs from the token server."""

    def next_failure(self) -> Failure | None: ...

    def record(self, entry: TokenRequest) -> None: ...

    def handle_get(self, query: dict[str, list[str]], authorization: str | None) -> Outcome: ...

    def handle_post(self, form: dict[str, list[str]]) -> Outcome: ...


def token_handler(backend: TokenBackend) -> Handler:
    """Serves /token for `backend`: GET (Docker token protocol) and POST (OAuth2 form)."""

    def handle(request: Request) -> Reply:
        if request.method == "POST":
            form = request.form
            # OAuth2 sends scopes space-separated in one field.
            form["scope"] = [s for f in form.get("scope", []) for s in f.split(" ") if s]
            chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
            return _serve(backend, request, form, lambda: backend.handle_post(form), chunked)
        query = request.query

        def run() -> Outcome:
            return backend.handle_get(query, request.authorization)

        return _serve(backend, request, query, run, False)

    return handle


def _serve(
    backend: TokenBackend,
    request: Request,
    params: dict[str, list[str]],
    run: Callable[[], Outcome],
    chunked: bool,
) -> Reply:
    outcome = _outcome(backend, request, run)
    # Recorded before the answer goes out: a client that clears the log after its answer
    # arrived must never see this request appear afterwards.
    backend.record(
        TokenRequest(
            method=request.method,
            user=outcome.user,
            scopes=tuple(params.get("scope", [])),
            status=outcome.status,
            had_authorization=request.authorization is not None,
            grant_type=params.get("grant_type", [None])[0],
            offline=params.get("offline_token", [""])[0] == "true"
            or params.get("access_type", [""])[0] == "offline",
            service=params.get("service", [None])[0],
            chunked=chunked,
            jti=outcome.jti,
        )
    )
    headers = {"Content-Type": "application/json", **outcome.headers}
    return Reply(outcome.status, headers, json.dumps(outcome.body).encode())


def _outcome(backend: TokenBackend, request: Request, run: Callable[[], Outcome]) -> Outcome:
    if request.url_path != "/token" or request.method not in ("GET", "POST"):
        return Outcome(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
    failure = backend.next_failure()
    if failure is not None:
        return _failure_outcome(failure)
    try:
        return run()
    except Unauthorized as exc:
        return Outcome(401, _UNAUTHORIZED_BODY, user=exc.user)


_UNAUTHORIZED_BODY = {
    "errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}],
    "details": "incorrect username or password",
}


def _failure_outcome(failure: Failure) -> Outcome:
    headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
    code = "TOOMANYREQUESTS" if failure.status == 429 else "UNAVAILABLE"
    body = {"errors": [{"code": code, "message": f"injected failure {failure.status}"}]}
    return Outcome(failure.status, body, headers=headers)
