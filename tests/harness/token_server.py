"""A Docker token endpoint over HTTPS, in a background thread, for the registry under test.

GET  /token?service=&scope=...  Basic credentials or none (anonymous), `offline_token=true`
POST /token  form: grant_type=password|refresh_token, service, scope, access_type=offline
Every request is recorded (never the password) so tests can count upstream token calls.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

from tests.harness.certs import TestCA
from tests.harness.grants import Grants, GrantsTable, Scope
from tests.harness.https_server import HTTPSServer
from tests.harness.jwt_signer import Access, KeyIdMode, TokenSigner
from tests.harness.token_wire import Failure, Outcome, TokenRequest, Unauthorized, token_handler

__all__ = ["KeyIdMode", "TokenRequest", "TokenServer"]


class TokenServer:
    """The token endpoint; `realm` is what the registry's challenge points clients at."""

    def __init__(
        self,
        ca: TestCA,
        *,
        service: str = "test-registry",
        issuer: str = "test-issuer",
        ttl: float = 300.0,
        key_id_mode: KeyIdMode = "x5c",
    ) -> None:
        self.ca = ca
        self.service = service
        self.ttl = ttl
        # Shifts the clock tokens are issued with (seconds); negative makes expired tokens.
        self.clock_offset = 0.0
        self.signer = TokenSigner(ca, issuer=issuer, service=service, key_id_mode=key_id_mode)
        self.grants = GrantsTable()
        self._requests: list[TokenRequest] = []
        self._failures: list[Failure] = []
        self._refresh: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._server: HTTPSServer | None = None
        cert = ca.issue(
            f"token-server-{secrets.token_hex(4)}",
            dns=["localhost"],
            ips=["127.0.0.1"],
            client=False,
        )
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert.cert_path, cert.key_path)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TokenServer:
        """Listen on a free 127.0.0.1 port and serve in a daemon thread."""
        self._server = HTTPSServer(token_handler(self), self._tls).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("token server is not running")
        return self._server.port

    @property
    def url(self) -> str:
        """https://127.0.0.1:PORT"""
        return f"https://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        """The token endpoint URL."""
        return f"{self.url}/token"

    # -- configuration ---------------------------------------------------------------------

    def add_user(self, name: str, password: str, grants: Grants) -> None:
        """Create or replace a user with repository-glob grants, e.g. {"team/*": ["pull"]}."""
        self.grants.add_user(name, password, grants)

    def set_password(self, name: str, password: str) -> None:
        """Rotate a password; the old one and the user's refresh tokens stop working."""
        self.grants.set_password(name, password)

    def remove_user(self, name: str) -> None:
        """Delete a user (revocation)."""
        self.grants.remove_user(name)

    def set_anonymous_grants(self, grants: Grants) -> None:
        """What anyone may do without credentials, e.g. {"public/*": ["pull"]}."""
        self.grants.set_anonymous_grants(grants)

    def fail_next(self, status: int, count: int = 1, *, retry_after: int | None = None) -> None:
        """Answer the next `count` requests with `status` (e.g. 429 with Retry-After, 503)."""
        with self._lock:
            self._failures.append(Failure(status, count, retry_after))

    def clear_failures(self) -> None:
        """Drop pending injected failures."""
        with self._lock:
            self._failures.clear()

    # -- observation -----------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        """A copy of every recorded request, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget recorded requests (call at the start of a counting test)."""
        with self._lock:
            self._requests.clear()

    def count(self, *, user: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match the given user and/or status."""
        return sum(
            1
            for r in self.requests
            if (user is None or r.user == user) and (status is None or r.status == status)
        )

    def issue_token(
        self, user: str | None, scopes: Sequence[str], *, ttl: float | None = None
    ) -> str:
        """Mint a token directly (no HTTP, not recorded), with the grants table applied."""
        access = self._access(user, scopes)
        now = time.time() + self.clock_offset
        token, _ = self.signer.sign(user or "", access, ttl=ttl or self.ttl, now=now)
        return token

    # -- request handling (called from handler threads, see token_wire) --------------------

    def next_failure(self) -> Failure | None:
        """Take one pending injected failure, if any."""
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            return failure

    def record(self, entry: TokenRequest) -> None:
        """Append one request to the log."""
        with self._lock:
            self._requests.append(entry)

    def _access(self, user: str | None, scopes: Sequence[str]) -> list[Access]:
        access: list[Access] = []
        for text in scopes:
            for part in text.split(" "):
                scope = Scope.parse(part)
                if scope is None:
                    continue
                allowed = self.grants.allowed(user, scope)
                if allowed:
                    access.append(Access(scope.type, scope.name, allowed))
        return access

    def _grant(
        self, user: str | None, scopes: Sequence[str], *, offline: bool, oauth: bool
    ) -> Outcome:
        now = time.time() + self.clock_offset
        token, claims = self.signer.sign(
            user or "", self._access(user, scopes), ttl=self.ttl, now=now
        )
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": int(self.ttl),
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        if oauth:
            body["scope"] = " ".join(scopes)
        if offline and user is not None:
            body["refresh_token"] = self._new_refresh_token(user)
        return Outcome(200, body, user=user, jti=str(claims["jti"]))

    def _new_refresh_token(self, user: str) -> str:
        value = secrets.token_urlsafe(32)
        generation = self.grants.generation(user)
        with self._lock:
            self._refresh[value] = (user, generation if generation is not None else -1)
        return value

    def _refresh_user(self, refresh_token: str) -> str:
        with self._lock:
            found = self._refresh.get(refresh_token)
        if found is None or self.grants.generation(found[0]) != found[1]:
            raise Unauthorized
        return found[0]

    def _basic_user(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized from exc
        if not sep or not self.grants.check_password(user, password):
            raise Unauthorized(user)
        return user

    def handle_get(self, query: dict[str, list[str]], authorization: str | None) -> Outcome:
        """GET: Basic credentials (or anonymous) for the requested scopes."""
        user = self._basic_user(authorization)
        offline = query.get("offline_token", ["false"])[0].lower() == "true"
        return self._grant(user, query.get("scope", []), offline=offline, oauth=False)

    def handle_post(self, form: dict[str, list[str]]) -> Outcome:
        """POST: the OAuth2 password or refresh_token grant."""
        grant_type = form.get("grant_type", [""])[0]
        scopes = [s for s in form.get("scope", []) if s]
        offline = form.get("access_type", [""])[0] == "offline"
        if grant_type == "password":
            user = form.get("username", [""])[0]
            if not self.grants.check_password(user, form.get("password", [""])[0]):
                raise Unauthorized(user)
        elif grant_type == "refresh_token":
            user = self._refresh_user(form.get("refresh_token", [""])[0])
            offline = False  # the client keeps using the refresh token it has
        else:
            return Outcome(400, {"error": "unsupported_grant_type"})
        outcome = self._grant(user, scopes, offline=offline, oauth=True)
        if grant_type == "refresh_token":
            outcome.body["refresh_token"] = form["refresh_token"][0]
        return outcome
