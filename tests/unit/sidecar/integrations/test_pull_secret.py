"""Rendering the dockerconfigjson Secret and timing its refresh."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from pullbroker_client.secret import Secret
from pullbroker_sidecar.daemon.login_cache import Login
from pullbroker_sidecar.errors import PassthroughRefused
from pullbroker_sidecar.integrations.pull_secret import format_secret, refresh_delay, render_secret

ACR_USER = "00000000-0000-0000-0000-000000000000"


def _login(
    repository: str, expires_at: float, host: str = "r.example:5000", **flags: bool
) -> Login:
    return Login(
        "registries/r1", host, host, repository, "AWS", Secret("short-lived"), expires_at, **flags
    )


class TestRender:
    def test_one_auths_entry_per_repository(self) -> None:
        """Keys are host/repo; each entry has username, password and the Basic `auth` pair."""
        secret = render_secret("apps", "pull", [_login("team/a", 2000.0), _login("team/b", 1500.0)])
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert secret["metadata"]["annotations"]["pullbroker.io/expires-at"].startswith("1970")
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        assert sorted(config["auths"]) == ["r.example:5000/team/a", "r.example:5000/team/b"]
        entry = config["auths"]["r.example:5000/team/a"]
        assert entry == {
            "username": "AWS",
            "password": "short-lived",
            "auth": base64.b64encode(b"AWS:short-lived").decode(),
        }

    def test_identity_token_is_written_for_every_reader(self) -> None:
        """A refresh token: `identitytoken` (docker, podman, skopeo) besides the password
        of the login's username (kubelet, which reads no identitytoken)."""
        login = Login(
            "registries/r1", "r.azurecr.io", "r.azurecr.io", "team/a", ACR_USER,
            Secret("refresh"), 2000.0, identity_token=True,
        )  # fmt: skip
        secret = render_secret("apps", "pull", [login])
        entry = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
        assert entry["r.azurecr.io/team/a"] == {
            "username": ACR_USER,
            "password": "refresh",
            "auth": base64.b64encode(f"{ACR_USER}:refresh".encode()).decode(),
            "identitytoken": "refresh",
        }

    def test_passthrough_login_is_refused(self) -> None:
        """The registry's long-lived credential never goes into a Secret: a clear error."""
        passthrough = _login("team/b", 2000.0, passthrough=True)
        with pytest.raises(PassthroughRefused, match="long-lived credential") as caught:
            render_secret("apps", "pull", [_login("team/a", 2000.0), passthrough])
        assert "short-lived" not in str(caught.value)
        assert "r.example:5000/team/b" in str(caught.value)

    def test_yaml_and_json_say_the_same(self) -> None:
        """-o json is one line; the default is a YAML document of the same object."""
        secret = render_secret("apps", "pull", [_login("team/a", 2000.0)])
        as_json = format_secret(secret, "json")
        assert as_json.count("\n") == 1
        assert json.loads(as_json) == yaml.safe_load(format_secret(secret, "table")) == secret


class TestRefresh:
    def test_half_of_the_shortest_life(self) -> None:
        """The next render comes at half the shortest remaining life."""
        assert refresh_delay([_login("a", 1300.0), _login("b", 1100.0)], now=1000.0) == 50.0

    def test_never_sooner_than_five_seconds_unless_capped(self) -> None:
        """An almost-expired login does not make a busy loop; --max-interval caps the wait."""
        assert refresh_delay([_login("a", 1002.0)], now=1000.0) == 5.0
        assert refresh_delay([_login("a", 1300.0)], now=1000.0, cap=0.5) == 0.5
