"""The helpers' own logic: socket discovery, kubelet responses, docker helper actions."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev set (types-jsonschema)
import pytest
from pullbroker_client.home import DEFAULT_HOME, HOME_ENV
from pullbroker_sidecar.daemon import protocol
from pullbroker_sidecar.errors import DaemonUnavailable
from pullbroker_sidecar.integrations import docker_credential, install, kubelet_provider

SCHEMA_PATH = (
    Path(__file__).parents[3] / "integration" / "nodes" / "credentialprovider_v1.schema.json"
)
SCHEMA = json.loads(SCHEMA_PATH.read_text())
API = "credentialprovider.kubelet.k8s.io/v1"


def _response_valid(document: dict[str, Any]) -> None:
    jsonschema.validate(document, {**SCHEMA, "$ref": "#/$defs/response"})


class TestSocketDiscovery:
    def test_home_constants_match_the_client(self) -> None:
        """The helpers' copy of the home rules is the client's (kept apart for start-up)."""
        assert (protocol.HOME_ENV, protocol.DEFAULT_HOME) == (HOME_ENV, DEFAULT_HOME)

    def test_socket_env_wins(self) -> None:
        """$PULLBROKER_SIDECAR_SOCKET over any home."""
        env = {protocol.SOCKET_ENV: "/run/pb.sock", HOME_ENV: "/srv/pb"}
        assert protocol.default_socket("/x", env) == "/run/pb.sock"

    def test_home_then_env_then_system_then_default(self, tmp_path: Path) -> None:
        """--home, $PULLBROKER_HOME, the system socket if present, else ~/.pullbroker."""
        system = tmp_path / "system.sock"
        assert protocol.default_socket("/x", {}, str(system)) == "/x/sidecar.sock"
        env = {HOME_ENV: "/srv/pb"}
        assert protocol.default_socket(None, env, str(system)) == "/srv/pb/sidecar.sock"
        assert protocol.default_socket(None, {}, str(system)).endswith("/.pullbroker/sidecar.sock")
        system.touch()
        assert protocol.default_socket(None, {}, str(system)) == str(system)

    def test_missing_socket_says_what_to_start(self, tmp_path: Path) -> None:
        """No socket: DaemonUnavailable naming `pullbroker-sidecar run`."""
        with pytest.raises(DaemonUnavailable, match="pullbroker-sidecar run"):
            protocol.ask(str(tmp_path / "none.sock"), {"op": "ping"}, timeout=1)

    def test_helpers_import_neither_grpc_nor_the_client(self) -> None:
        """Start-up: the helper modules pull in no gRPC, httpx, nor more of the client than
        its standard-library-only jsonlimits."""
        code = (
            "import sys, pullbroker_sidecar.integrations.docker_credential, "
            "pullbroker_sidecar.integrations.kubelet_provider; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('grpc', 'httpx', 'pullbroker_client', 'structlog', 'cryptography')))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        allowed = "['pullbroker_client', 'pullbroker_client.jsonlimits']"
        assert done.stdout.strip() == allowed, done.stderr


class TestKubeletResponse:
    def test_login_answer(self) -> None:
        """Key host/repo, Image cache key, half the remaining life, same apiVersion."""
        request = {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r:5000/a/b"}
        answer = {"ok": True, "key": "r:5000/a/b", "username": "u", "secret": "s",
                  "expires_at": 1300.0}  # fmt: skip
        response = kubelet_provider.build_response(request, answer, now=1000.0)
        _response_valid(response)
        assert response == {
            "kind": "CredentialProviderResponse",
            "apiVersion": API,
            "cacheKeyType": "Image",
            "cacheDuration": "150s",
            "auth": {"r:5000/a/b": {"username": "u", "password": "s"}},
        }

    def test_refusal_has_no_auth_and_is_not_cached(self) -> None:
        """No login: no auth, cacheDuration 0s; with an SA token the cache type is set."""
        request = {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r/a",
                   "serviceAccountToken": "tok"}  # fmt: skip
        response = kubelet_provider.build_response(request, {"ok": False}, now=0.0)
        _response_valid(response)
        assert "auth" not in response
        assert response["cacheDuration"] == "0s"
        assert response["serviceAccountTokenCacheType"] == "ServiceAccount"

    def test_expired_login_is_not_cached(self) -> None:
        """A login past its expiry gets cacheDuration 0s (never negative)."""
        request = {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r/a"}
        answer = {"ok": True, "key": "r/a", "username": "u", "secret": "s", "expires_at": 10.0}
        assert kubelet_provider.build_response(request, answer, now=50.0)["cacheDuration"] == "0s"

    def test_identity_token_goes_as_the_password_of_its_username(self) -> None:
        """ACR's refresh token: kubelet gets it as the password of the GUID user (no field
        for identity tokens), which ACR's realm accepts."""
        request = {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r/a"}
        user = "00000000-0000-0000-0000-000000000000"
        answer = {"ok": True, "key": "r/a", "username": user, "secret": "refresh",
                  "identity_token": True, "expires_at": 1300.0}  # fmt: skip
        response = kubelet_provider.build_response(request, answer, now=1000.0)
        _response_valid(response)
        assert response["auth"] == {"r/a": {"username": user, "password": "refresh"}}

    @pytest.mark.parametrize("username", ["", "<token>"])
    def test_identity_token_without_a_username_is_refused(self, username: str) -> None:
        """A refresh token kubelet could not pass on: no auth, not cached, and the reason."""
        request = {"apiVersion": API, "kind": "CredentialProviderRequest", "image": "r/a"}
        answer = {"ok": True, "key": "r/a", "username": username, "secret": "refresh",
                  "identity_token": True, "expires_at": 1300.0}  # fmt: skip
        response = kubelet_provider.build_response(request, answer, now=1000.0)
        _response_valid(response)
        assert "auth" not in response
        assert response["cacheDuration"] == "0s"
        assert "pullbroker-sidecar pull" in kubelet_provider.unusable(answer)

    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            '{"kind": "Pod"}',
            '{"kind": "CredentialProviderRequest", "apiVersion": "v9", "image": "a"}',
            '{"kind": "CredentialProviderRequest", "apiVersion": "' + API + '", "image": ""}',
        ],
    )
    def test_bad_requests_are_refused(self, text: str) -> None:
        """Anything but a request with a known apiVersion and an image is BadRequest."""
        with pytest.raises(kubelet_provider.BadRequest):
            kubelet_provider.parse_request(text)


class TestDockerHelperActions:
    @pytest.mark.parametrize("action", ["store", "erase"])
    def test_store_and_erase_refuse(self, action: str) -> None:
        """Exit 1 and a message: credentials are managed by the broker."""
        out = io.StringIO()
        stdin = io.StringIO('{"ServerURL":"r","Username":"u","Secret":"s"}')
        assert docker_credential.main([action], stdin, out) == 1
        assert "pullbroker manages registry credentials" in out.getvalue()

    def test_unknown_action_prints_usage(self) -> None:
        """An unknown action: exit 1 with the usage line."""
        out = io.StringIO()
        assert docker_credential.main(["frobnicate"], io.StringIO(), out) == 1
        assert out.getvalue().startswith("usage: docker-credential-pullbroker")

    @pytest.mark.parametrize(
        ("identity_token", "username"), [(False, "oauth2accesstoken"), (True, "<token>")]
    )
    def test_get_answers_identity_tokens_as_token_user(
        self, monkeypatch: pytest.MonkeyPatch, identity_token: bool, username: str
    ) -> None:
        """A refresh token goes out as Username "<token>" (runtimes then use it as one)."""
        answer = {"ok": True, "username": "oauth2accesstoken", "secret": "s",
                  "identity_token": identity_token}  # fmt: skip
        monkeypatch.setattr(docker_credential, "ask", lambda *_args, **_kw: answer)
        out = io.StringIO()
        assert docker_credential.main(["get"], io.StringIO("r.example\n"), out) == 0
        assert json.loads(out.getvalue()) == {
            "ServerURL": "r.example",
            "Username": username,
            "Secret": "s",
        }

    def test_empty_get_is_an_error(self) -> None:
        """`get` with nothing on stdin fails without asking anyone."""
        out = io.StringIO()
        assert docker_credential.main(["get"], io.StringIO(""), out) == 1
        assert out.getvalue() == "no server URL on stdin\n"


class TestInstallHelpers:
    def test_standalone_helpers_run_on_the_system_python(self, tmp_path: Path) -> None:
        """install-helpers writes zipapps the host's python3 runs without this package."""
        python = Path("/usr/bin/python3")
        if not python.exists():
            pytest.skip("no /usr/bin/python3 on this machine")
        written = install.install(tmp_path / "bin")
        assert sorted(p.name for p in written) == sorted(install.HELPERS)
        env = {"PATH": "/usr/bin:/bin", protocol.SOCKET_ENV: str(tmp_path / "none.sock")}
        helper = tmp_path / "bin" / "docker-credential-pullbroker"
        version = subprocess.run([str(python), str(helper), "version"], capture_output=True,
                                 text=True, env=env, cwd=tmp_path)  # fmt: skip
        assert version.stdout.startswith("pullbroker ")
        got = subprocess.run([str(python), str(helper), "get"], input="r.example",
                             capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
        assert got.returncode == 1
        assert "no pullbroker sidecar socket" in got.stdout
        assert os.access(helper, os.X_OK)
