"""Plumbing for the cloud endpoint fixtures: a JSON endpoint layer on the harness HTTPSServer,
and a real distribution registry whose token realm is one of those fixtures.

The fixtures stand in for endpoints that cannot run on this machine (Google's OAuth token
endpoint and registry token service, Azure AD, ACR's token service). The registry in front
of them is the real `docker-registry`: it verifies the tokens the fixtures sign, so a test
that pulls with a minted token proves the registry accepted it.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.harness.certs import TestCA
from tests.harness.grants import GrantsTable, Scope
from tests.harness.https_server import HTTPSServer, Reply, Request, json_reply
from tests.harness.images import build_image
from tests.harness.jwt_signer import Access, TokenSigner
from tests.harness.registry import Registry
from tests.harness.skopeo import push_image


@dataclass(frozen=True)
class Seen:
    """One request a fixture served (form/query keys only: values may be secrets)."""

    method: str
    path: str
    keys: tuple[str, ...]
    status: int
    grant_type: str | None


class JsonHttpsServer:
    """A JSON endpoint on the harness HTTPSServer; subclasses implement `handle`."""

    def __init__(self, ca: TestCA, name: str) -> None:
        self._ca = ca
        self._name = name
        self._server: HTTPSServer | None = None
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._failures: list[Reply] = []

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def fail_next(self, reply: Reply) -> None:
        """Answer the next request with `reply` instead of handling it."""
        with self._lock:
            self._failures.append(reply)

    def answer(self, request: Request) -> Reply:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        reply = failure if failure is not None else self.handle(request)
        # Recorded before the answer goes out, so a test reading the log after its answer
        # arrived always finds this request there.
        self._record(request, reply)
        return reply

    def start(self) -> JsonHttpsServer:
        self._server = HTTPSServer(self.answer, self._ca, name=self._name).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def host(self) -> str:
        """127.0.0.1:PORT"""
        assert self._server is not None, "fixture is not running"
        return self._server.host

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def seen(self, path: str | None = None) -> list[Seen]:
        """Requests served so far (optionally only those to `path`)."""
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._failures.clear()

    def _record(self, request: Request, reply: Reply) -> None:
        # Blank form fields count as sent: a test checks which fields a client posted.
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        keys = tuple(sorted({*form, *request.query}))
        grant_type = request.one("grant_type") or None
        entry = Seen(request.method, request.url_path, keys, reply.status, grant_type)
        with self._lock:
            self._seen.append(entry)


class RegistryTokens:
    """Signs registry tokens the way a cloud registry's token service would: for a principal,
    the scopes asked for, intersected with that principal's grants (GrantsTable semantics)."""

    def __init__(self, ca: TestCA, *, service: str, issuer: str, ttl: int = 600) -> None:
        self.signer = TokenSigner(ca, issuer=issuer, service=service)
        self.grants = GrantsTable()
        self.service = service
        self.ttl = ttl

    def sign(self, principal: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
        access = []
        for text in scopes:
            for part in text.split(" "):
                scope = Scope.parse(part)
                allowed = self.grants.allowed(principal, scope) if scope else ()
                if scope and allowed:
                    access.append(Access(scope.type, scope.name, allowed))
        return self.signer.sign(principal, access, ttl=self.ttl)


class RealmRegistry(Registry):
    """The real distribution registry, token auth against a fixture realm and signer."""

    kind = "token"

    def __init__(self, workdir: Path, ca: TestCA, *, realm: str, tokens: RegistryTokens) -> None:
        super().__init__(workdir, ca)
        self.realm = realm
        self.tokens = tokens

    def _auth_config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.tokens.service,
                "issuer": self.tokens.signer.issuer,
                "rootcertbundle": str(self.tokens.signer.bundle_path),
            }
        }


UNAUTHORIZED = json_reply(
    401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
)


def seed_image(registry: RealmRegistry, tokens: RegistryTokens, layouts: Path) -> str:
    """Push team/app:v1 (one small layer) as a `pusher` user; returns its digest."""
    password = secrets.token_hex(16)
    tokens.grants.add_user("pusher", password, {"team/**": ["*"]})
    image = build_image(layouts, "app-v1", [1024])
    return push_image(image, registry, "team/app", "v1", username="pusher", password=password)
