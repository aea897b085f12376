"""The test harness drives the real distribution registry, skopeo and our token server."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography import x509

from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.certs import TestCA
from tests.harness.images import OCI_INDEX, OCI_MANIFEST, build_image, inspect_raw, push_image
from tests.harness.jwt_signer import decode_claims
from tests.harness.registry import HtpasswdRegistry, PlainRegistry, TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.harness.token_server import TokenServer

pytestmark = pytest.mark.integration

_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])


@pytest.fixture(scope="module")
def http(test_ca: TestCA) -> Iterator[httpx.Client]:
    """A client trusting only the session test CA, blind to proxy/CA environment variables."""
    ctx = ssl.create_default_context(cadata=test_ca.pem)
    with httpx.Client(verify=ctx, trust_env=False, timeout=10) as client:
        yield client


def _token(
    http: httpx.Client, registry: TokenAuthRegistry, scope: str, user: str | None = None
) -> str:
    auth = (user, registry.users[user]) if user else None
    resp = http.get(
        registry.token_server.realm,
        params={"service": registry.service, "scope": scope},
        auth=auth,
    )
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["token"]
    return token


def _get_manifest(
    http: httpx.Client, registry: TokenAuthRegistry, repo: str, ref: str, token: str
) -> httpx.Response:
    return http.get(
        f"{registry.url}/v2/{repo}/manifests/{ref}",
        headers={"Authorization": f"Bearer {token}", "Accept": _ACCEPT},
    )


class TestTokenRegistry:
    """The token-auth registry speaks the Docker token protocol end to end."""

    def test_anonymous_ping_gets_bearer_challenge(
        self, http: httpx.Client, token_registry: TokenAuthRegistry
    ) -> None:
        """GET /v2/ without credentials answers 401 with a Bearer challenge naming our realm."""
        resp = http.get(f"{token_registry.url}/v2/")
        assert resp.status_code == 401
        challenge = resp.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'realm="{token_registry.token_server.realm}"' in challenge
        assert 'service="test-registry"' in challenge

    def test_bob_pulls_team_app_manifest(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, pushed_images: StandardImages
    ) -> None:
        """bob's pull token for team/app fetches the pushed manifest with the pushed digest."""
        token = _token(http, token_registry, "repository:team/app:pull", BOB)
        resp = _get_manifest(http, token_registry, "team/app", "v1", token)
        assert resp.status_code == 200
        assert resp.headers["docker-content-digest"] == pushed_images.app.digest
        assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == pushed_images.app.digest

    def test_bob_token_cannot_read_team_other(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, pushed_images: StandardImages
    ) -> None:
        """A team/app token gets 401 insufficient_scope on team/other."""
        token = _token(http, token_registry, "repository:team/app:pull", BOB)
        resp = _get_manifest(http, token_registry, "team/other", "v1", token)
        assert resp.status_code == 401
        assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]
        assert 'scope="repository:team/other:pull"' in resp.headers["www-authenticate"]

    def test_ungranted_actions_are_dropped(
        self, http: httpx.Client, token_registry: TokenAuthRegistry
    ) -> None:
        """bob asking for pull,push on team/app and pull on team/other gets only team/app pull."""
        scope = "repository:team/app:pull,push"
        resp = http.get(
            token_registry.token_server.realm,
            params=[
                ("service", "test-registry"),
                ("scope", scope),
                ("scope", "repository:team/other:pull"),
            ],
            auth=(BOB, token_registry.users[BOB]),
        )
        claims = decode_claims(resp.json()["token"])
        assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
        assert claims["aud"] == "test-registry"
        assert {"iss", "sub", "exp", "nbf", "iat", "jti"} <= claims.keys()

    def test_anonymous_pulls_public_only(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, pushed_images: StandardImages
    ) -> None:
        """An anonymous token reads public/hello but carries no access to team/app."""
        public = _token(http, token_registry, "repository:public/hello:pull")
        assert _get_manifest(http, token_registry, "public/hello", "v1", public).status_code == 200
        private = _token(http, token_registry, "repository:team/app:pull")
        assert decode_claims(private)["access"] == []
        assert _get_manifest(http, token_registry, "team/app", "v1", private).status_code == 401

    def test_wrong_password_is_401_and_recorded(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, token_server: TokenServer
    ) -> None:
        """A wrong password gets 401 with a JSON error; the log keeps the user, not the password."""
        wrong = new_canary("wrong")
        resp = http.get(
            token_server.realm,
            params={"service": "test-registry", "scope": "repository:team/app:pull"},
            auth=(BOB, wrong),
        )
        assert resp.status_code == 401
        assert resp.json()["errors"][0]["code"] == "UNAUTHORIZED"
        [entry] = token_server.requests
        assert (entry.user, entry.status, entry.had_authorization) == (BOB, 401, True)
        assert not find_in_text(repr(token_server.requests), wrong)

    def test_skopeo_inspect_lists_both_platforms(
        self, token_registry: TokenAuthRegistry, pushed_images: StandardImages
    ) -> None:
        """skopeo sees team/multi:v1 as an index of linux/amd64 and linux/arm64."""
        raw = inspect_raw(
            token_registry, "team/multi", "v1", username=ALICE, password=token_registry.users[ALICE]
        )
        platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]}
        assert platforms == {("linux", "amd64"), ("linux", "arm64")}
        assert [m["digest"] for m in raw["manifests"]] == [
            m.digest for m in pushed_images.multi.image.manifests
        ]

    def test_expired_token_is_rejected(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, token_server: TokenServer,
        pushed_images: StandardImages,
    ) -> None:  # fmt: skip
        """A token that expired beyond the registry's 60 s leeway is refused."""
        token_server.clock_offset = -300
        token = token_server.issue_token(BOB, ["repository:team/app:pull"], ttl=60)
        assert _get_manifest(http, token_registry, "team/app", "v1", token).status_code == 401


class TestTokenServerProtocol:
    """OAuth2 POST grants, refresh tokens, rotation and failure injection."""

    def test_chunked_password_grant_returns_refresh_token(
        self, http: httpx.Client, make_token_registry: Callable[..., TokenAuthRegistry]
    ) -> None:
        """A chunked POST password grant with access_type=offline yields a working refresh token."""
        registry = make_token_registry()
        form = {
            "grant_type": "password", "username": ALICE, "password": registry.users[ALICE],
            "service": "test-registry", "scope": "repository:team/app:pull",
            "access_type": "offline",
        }  # fmt: skip
        resp = _post_chunked(http, registry.token_server.realm, form)
        assert resp.status_code == 200
        body = resp.json()
        assert {"token", "access_token", "expires_in", "issued_at", "refresh_token"} <= body.keys()
        assert registry.token_server.requests[-1].chunked
        refreshed = _refresh(http, registry, body["refresh_token"])
        assert refreshed.status_code == 200
        assert decode_claims(refreshed.json()["access_token"])["sub"] == ALICE

    def test_skopeo_uses_refresh_token_via_chunked_post(
        self, http: httpx.Client, token_registry: TokenAuthRegistry, token_server: TokenServer,
        pushed_images: StandardImages,
    ) -> None:  # fmt: skip
        """skopeo with an identity token POSTs a chunked refresh grant the server accepts."""
        form = {"grant_type": "password", "username": BOB, "password": token_registry.users[BOB],
                "service": "test-registry", "access_type": "offline"}  # fmt: skip
        refresh_token = http.post(token_server.realm, data=form).json()["refresh_token"]
        token_server.clear_requests()
        raw = inspect_raw(token_registry, "team/app", "v1", identity_token=refresh_token)
        assert raw["mediaType"] == OCI_MANIFEST
        grants = [(r.grant_type, r.chunked, r.user, r.status) for r in token_server.requests]
        assert grants == [("refresh_token", True, BOB, 200)]

    def test_password_rotation_revokes_password_and_refresh_token(
        self, http: httpx.Client, make_token_registry: Callable[..., TokenAuthRegistry]
    ) -> None:
        """After set_password the old password and old refresh tokens get 401."""
        registry = make_token_registry()
        old = registry.users[ALICE]
        form = {"grant_type": "password", "username": ALICE, "password": old,
                "service": "test-registry", "access_type": "offline"}  # fmt: skip
        refresh_token = http.post(registry.token_server.realm, data=form).json()["refresh_token"]
        registry.set_password(ALICE, new_canary("rotated"))
        assert http.post(registry.token_server.realm, data=form).status_code == 401
        assert _refresh(http, registry, refresh_token).status_code == 401

    def test_injected_429_carries_retry_after(
        self, http: httpx.Client, token_server: TokenServer
    ) -> None:
        """fail_next(429) answers the next request with Retry-After, then service resumes."""
        token_server.fail_next(429, retry_after=7)
        params = {"service": "test-registry", "scope": "repository:public/hello:pull"}
        first = http.get(token_server.realm, params=params)
        assert (first.status_code, first.headers.get("retry-after")) == (429, "7")
        assert http.get(token_server.realm, params=params).status_code == 200
        assert [r.status for r in token_server.requests] == [429, 200]

    def test_libtrust_kid_tokens_are_accepted(
        self, http: httpx.Client, make_token_registry: Callable[..., TokenAuthRegistry]
    ) -> None:
        """A registry whose tokens name the key by libtrust kid accepts them."""
        registry = make_token_registry(key_id_mode="kid")
        token = _token(http, registry, "repository:team/app:pull", BOB)
        header = _jwt_header(token)
        assert "kid" in header
        assert "x5c" not in header
        resp = _get_manifest(http, registry, "team/app", "v1", token)
        assert resp.status_code == 404  # authorised: the repository just does not exist there
        assert resp.json()["errors"][0]["code"] in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")


class TestOtherRegistries:
    """Basic-auth and no-auth registries, and corrupted blobs."""

    def test_htpasswd_registry_checks_basic_credentials(
        self, http: httpx.Client, tmp_path: Path, test_ca: TestCA
    ) -> None:
        """The htpasswd registry challenges with Basic and accepts only the right password."""
        password = new_canary("basic")
        with HtpasswdRegistry(tmp_path / "basic", test_ca, users={"carol": password}) as registry:
            anon = http.get(f"{registry.url}/v2/")
            assert anon.status_code == 401
            assert anon.headers["www-authenticate"].lower().startswith("basic")
            assert http.get(f"{registry.url}/v2/", auth=("carol", password)).status_code == 200
            assert http.get(f"{registry.url}/v2/", auth=("carol", "nope")).status_code == 401
            assert not find_in_tree(registry.workdir, password)

    def test_corrupt_blob_serves_wrong_bytes(
        self, http: httpx.Client, tmp_path: Path, test_ca: TestCA
    ) -> None:
        """After corrupt_blob the registry serves bytes that no longer match the digest."""
        with PlainRegistry(tmp_path / "plain", test_ca) as registry:
            image = build_image(tmp_path / "layout", "v1", [8192])
            push_image(image, registry, "team/bad", "v1")
            layer = image.layers[0]
            registry.corrupt_blob("team/bad", layer.digest)
            resp = http.get(f"{registry.url}/v2/team/bad/blobs/{layer.digest}")
            assert resp.status_code == 200
            assert len(resp.content) == layer.size
            assert "sha256:" + hashlib.sha256(resp.content).hexdigest() != layer.digest


class TestSupport:
    """Certificates and canaries behave as the other tests assume."""

    def test_issued_key_is_private_and_cert_chains(self, test_ca: TestCA) -> None:
        """Issued keys are 0600 and certificates name the requested SANs."""
        issued = test_ca.issue("node-x", uris=["spiffe://pullbroker.local/node/x"], cn="node-x")
        assert stat.S_IMODE(issued.key_path.stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            "spiffe://pullbroker.local/node/x"
        ]
        assert cert.issuer == test_ca.cert.subject

    def test_find_in_tree_sees_encoded_canaries(self, tmp_path: Path) -> None:
        """A canary hidden as base64 inside a docker auth blob is still found."""
        canary = new_canary()
        blob = base64.b64encode(f"user:{canary}".encode()).decode()
        (tmp_path / "config.json").write_text(f'{{"auths":{{"h":{{"auth":"{blob}"}}}}}}')
        (tmp_path / "clean.txt").write_text(new_canary())
        assert find_in_tree(tmp_path, canary) == [tmp_path / "config.json"]


def _post_chunked(http: httpx.Client, url: str, form: dict[str, str]) -> httpx.Response:
    body = urlencode(form).encode()

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    return http.post(
        url, content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def _refresh(http: httpx.Client, registry: TokenAuthRegistry, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "service": "test-registry", "scope": "repository:team/app:pull"}  # fmt: skip
    return _post_chunked(http, registry.token_server.realm, form)


def _jwt_header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return header
