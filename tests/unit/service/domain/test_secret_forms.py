"""Every encoding of a credential an upstream could echo is known to the scrubber, and every
failed IssuePullToken leaves an audit event."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pullbroker_client.registry.errors import clean, error_for_response
from pullbroker_client.secret import Secret
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.token_guard import GuardedTokenIssuer
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import (
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    GoogleServiceAccount,
    MintedToken,
    RegistryRecord,
)
from pullbroker_service.domain.secret_forms import credential_forms, derived_forms
from pullbroker_service.infra.logging import forget_secret_value, register_secret_values, scrub

from tests.harness.canary import find_in_text, new_canary

USER = "robot$acme+ci"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# (what the upstream echoes, built from user and password)
ECHOES: list[tuple[str, Callable[[str, str], str]]] = [
    ("raw", lambda u, p: p),
    ("pair", lambda u, p: f"{u}:{p}"),
    ("basic-header", lambda u, p: f"Basic {_b64(f'{u}:{p}')}"),
    ("b64-pair", lambda u, p: _b64(f"{u}:{p}")),
    ("b64-pair-unpadded", lambda u, p: _b64(f"{u}:{p}").rstrip("=")),
    ("b64url-pair", lambda u, p: _b64url(f"{u}:{p}")),
    ("b64url-pair-unpadded", lambda u, p: _b64url(f"{u}:{p}").rstrip("=")),
    ("b64-password", lambda u, p: _b64(p)),
    ("b64-password-unpadded", lambda u, p: _b64(p).rstrip("=")),
    ("b64url-password", lambda u, p: _b64url(p)),
    ("b64url-password-unpadded", lambda u, p: _b64url(p).rstrip("=")),
    ("quote", lambda u, p: quote(p, safe="")),
    ("quote-plus", lambda u, p: quote_plus(p)),
    ("quote-pair", lambda u, p: quote(f"{u}:{p}", safe="")),
    ("json", lambda u, p: json.dumps(p)[1:-1]),
    ("quote-lower-escapes", lambda u, p: _lower_escapes(quote(p, safe=""))),
    ("hex", lambda u, p: p.encode().hex()),
    ("hex-upper", lambda u, p: p.encode().hex().upper()),
    ("b64-inside-docker-config", lambda u, p: _b64(json.dumps({"auth": f"{u}:{p}"}))),
]


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def password() -> str:
    # Characters that every encoding spells differently.
    return new_canary("forms") + '/+ &="\\é'


class TestDerivedForms:
    """derived_forms covers each way a secret travels or is echoed."""

    @pytest.mark.parametrize(("name", "echo"), ECHOES, ids=[name for name, _ in ECHOES])
    def test_echo_is_scrubbed(self, name: str, echo: Callable[[str, str], str]) -> None:
        """After registering the derived forms, the echo leaves no trace of the canary."""
        secret = password()
        forms = derived_forms(secret, USER)
        text = f"upstream said: <{echo(USER, secret)}> (400)"
        assert find_in_text(text, secret.split("/")[0])  # the echo does carry it
        register_secret_values(forms)
        try:
            assert not find_in_text(scrub(text), secret.split("/")[0])
        finally:
            for form in forms:
                forget_secret_value(form)

    def test_no_username_no_pair(self) -> None:
        """Without a username only the secret's own forms are derived."""
        forms = derived_forms("s3cret-value-0123456789")
        assert "s3cret-value-0123456789" in forms
        assert not any(form.startswith("Basic ") for form in forms)
        assert derived_forms("") == set()


class TestCredentialForms:
    """Each credential kind registers the forms of its own secrets."""

    def test_each_kind(self) -> None:
        """Basic, AWS, Azure pair with client id, Google key JSON and its PEM body lines."""
        secret = password()
        assert f"Basic {_b64(f'{USER}:{secret}')}" in credential_forms(
            BasicCredential(USER, Secret(secret))
        )
        assert quote_plus(secret) in credential_forms(AwsCredential("AKIA", Secret(secret)))
        azure = credential_forms(AzureServicePrincipal("t", "client-id", Secret(secret)))
        assert quote_plus(secret) in azure
        assert f"Basic {_b64(f'client-id:{secret}')}" in azure
        pem = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        key_json = json.dumps({"type": "service_account", "private_key": pem})
        google = credential_forms(GoogleServiceAccount(Secret(key_json)))
        body_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
        assert {key_json, pem, _b64(key_json), "".join(body_lines)} <= google
        assert all(line in google for line in body_lines if len(line) >= 16)


class TestUpstreamText:
    """Upstream text is quoted only cleaned: Authorization values blanked, bounded."""

    def test_error_body_echoing_authorization(self) -> None:
        """A registry error message quoting our Basic and Bearer headers is blanked."""
        basic = f"Basic {_b64('robot:' + new_canary('hdr'))}"
        body = json.dumps(
            {"errors": [{"code": "BAD", "message": f"got {basic} and Bearer abc.def.ghi123"}]}
        )
        message = str(error_for_response(400, body.encode(), host="h", subject="a token"))
        assert basic not in message
        assert "abc.def.ghi123" not in message
        assert "Basic [redacted]" in message
        assert len(clean("x" * 10_000, 200)) == 200

    @pytest.mark.parametrize("where", ["message", "code"])
    def test_echo_cut_by_the_length_limit_leaves_no_prefix(self, where: str) -> None:
        """A password straddling the quoting limit (message or code) is scrubbed before the
        cut, so not even its first characters survive; the code keeps its case."""
        secret = new_canary("cut")
        padding = "x" * (190 if where == "message" else 50)
        entry = {"code": "BAD", "message": f"{padding} password was {secret}"}
        if where == "code":
            entry = {"code": f"{padding}{secret}", "message": "bad"}
        body = json.dumps({"errors": [entry]}).encode()
        register_secret_values(derived_forms(secret, USER))
        try:
            message = str(error_for_response(400, body, host="h", subject="a token"))
        finally:
            for form in derived_forms(secret, USER):
                forget_secret_value(form)
        assert secret[:6] not in message
        assert secret[:6].upper() not in message


ADMIN = Identity("spiffe://pullbroker.local/node/n1", frozenset({"node"}))


class _Crashing:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.gate = asyncio.Event()

    async def issue(
        self,
        caller: Identity,
        image: str,
        registry: str | None,
        force_refresh: bool,
        service_account_token: Secret | None = None,
    ) -> tuple[MintedToken, RegistryRecord]:
        if self.error is not None:
            raise self.error
        await self.gate.wait()
        raise AssertionError("never released")


class TestEveryFailureAudited:
    """A failed IssuePullToken is audited whatever it failed with."""

    @pytest.mark.parametrize(
        "error", [OverflowError("date value out of range"), ValueError("NaN")], ids=repr
    )
    async def test_unexpected_error(self, tmp_path: Path, error: Exception) -> None:
        """A crash is one FAILED event naming the error's type, and still raises."""
        sink = AuditSink(tmp_path / "audit.jsonl")
        guarded = GuardedTokenIssuer(_Crashing(error), audit=sink)
        with pytest.raises(type(error)):
            await guarded.issue(ADMIN, "reg.example/team/app:1", None, False)
        sink.close()
        (line,) = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert (line["action"], line["outcome"]) == ("token.issue", "failed")
        assert line["repository"] == "team/app"
        assert type(error).__name__ in line["reason"]
        assert str(error) not in line["reason"]

    async def test_cancelled_caller(self, tmp_path: Path) -> None:
        """A caller that gives up mid-mint leaves a FAILED event saying so."""
        sink = AuditSink(tmp_path / "audit.jsonl")
        guarded = GuardedTokenIssuer(_Crashing(None), audit=sink)
        call = asyncio.ensure_future(guarded.issue(ADMIN, "reg.example/team/app:1", None, False))
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        sink.close()
        (line,) = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert line["outcome"] == "failed"
        assert line["reason"].startswith("cancelled")
