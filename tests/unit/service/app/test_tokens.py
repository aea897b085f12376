"""Token issuing: reference parsing, registry choice, host and policy checks, caching, audit log."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.tokens import choose_record
from pullbroker_service.domain.errors import (
    AmbiguousRegistry,
    CredentialRejected,
    FailedPrecondition,
    HostMismatch,
    InvalidReference,
    InvalidRegistry,
    RegistryNotFound,
    ScopeNotAllowed,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import AuthKind, BasicCredential, RecordState, RegistryKind
from structlog.testing import capture_logs

from tests.unit.service.conftest import ADMIN, NODE, Core

ADMIN_CALLER = Identity(ADMIN, frozenset({"admin"}))
NODE_CALLER = Identity(NODE, frozenset({"node"}))
CRED = BasicCredential("robot", Secret("stored-password"))


async def add(
    core: Core,
    name: str = "acme",
    url: str = "https://reg.example:5000",
    repositories: tuple[str, ...] = (),
) -> str:
    spec = RegistrySpec(name, RegistryKind.GENERIC, url, repositories=repositories)
    record = await core.registries.create(ADMIN_CALLER, spec, CRED, test=False)
    return record.id


class TestIssue:
    """A permitted request gets a pull-scoped token minted with the stored credential."""

    async def test_issue_by_host(self, core: Core) -> None:
        """The registry is found by the image's host; the minter gets the decrypted credential."""
        registry_id = await add(core)
        token, record = await core.issuer.issue(
            NODE_CALLER, "reg.example:5000/team/app:v1", None, False
        )
        assert record.id == registry_id
        assert (token.scope, token.repository) == ("repository:team/app:pull", "team/app")
        call = core.minter.mints[0]
        assert (call.registry_id, call.credential, call.repository) == (
            registry_id,
            CRED,
            "team/app",
        )

    async def test_cache_hit_and_force_refresh(self, core: Core) -> None:
        """Repeated requests reuse the token; force_refresh mints a new one."""
        await add(core)
        image = "reg.example:5000/team/app@sha256:" + "a" * 64
        first, _ = await core.issuer.issue(NODE_CALLER, image, None, False)
        again, _ = await core.issuer.issue(NODE_CALLER, image, None, False)
        forced, _ = await core.issuer.issue(NODE_CALLER, image, None, True)
        assert first.token == again.token != forced.token
        assert len(core.minter.mints) == 2

    async def test_rotation_mints_with_new_credential(self, core: Core) -> None:
        """After a rotation the next token is minted from the new credential, not the cache."""
        await add(core)
        image = "reg.example:5000/team/app:v1"
        await core.issuer.issue(NODE_CALLER, image, None, False)
        current = await core.registries.get("acme")
        new = BasicCredential("robot", Secret("rotated"))
        await core.registries.update(
            ADMIN_CALLER, "acme", current.etag, display_name=None, registry_ca_pem=None,
            allow_basic_passthrough=None, credential=new,
        )  # fmt: skip
        await core.issuer.issue(NODE_CALLER, image, None, False)
        assert [m.credential for m in core.minter.mints] == [CRED, new]

    async def test_explicit_registry_and_default_port(self, core: Core) -> None:
        """A registry named explicitly is used; ":443" in the image equals the bare host."""
        await add(core, "acme", "https://reg.example")
        token, record = await core.issuer.issue(
            NODE_CALLER, "reg.example:443/team/app:v1", "acme", False
        )
        assert record.display_name == "acme"
        assert token.repository == "team/app"

    async def test_mint_error_reaches_caller(self, core: Core) -> None:
        """A registry refusing the credential surfaces as CredentialRejected."""
        await add(core)
        core.minter.error = CredentialRejected("registry reg.example:5000 rejected the credential")
        with pytest.raises(CredentialRejected):
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app:v1", None, False)


class TestSeveralRecordsPerHost:
    """Records of one host told apart by repository globs: a node never names one."""

    async def test_globs_pick_the_record(self, core: Core) -> None:
        """Each repository gets the record whose glob matches it; none matching says so."""
        await add(core, "apps", repositories=("team/a*",))
        await add(core, "base", repositories=("team/b*",))
        for image, expected in (("team/app", "apps"), ("team/box:1", "base")):
            _, record = await core.issuer.issue(
                NODE_CALLER, f"reg.example:5000/{image}", None, False
            )
            assert record.display_name == expected
        with pytest.raises(RegistryNotFound, match=r"serves repository team/cat.*'apps': team/a\*"):
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/cat", None, False)

    async def test_most_specific_wins(self, core: Core) -> None:
        """An exact name beats `*`, `*` beats `**`, and any glob beats a record without."""
        await add(core, "catch-all")
        await add(core, "deep", repositories=("team/**",))
        await add(core, "flat", repositories=("team/*",))
        await add(core, "exact", repositories=("team/app",))
        found = await core.store.find_by_host("reg.example:5000")
        chosen = {}
        for repo in ("team/app", "team/web", "team/x/y", "other/z"):
            chosen[repo] = choose_record(found, "reg.example:5000", repo).display_name
        _, record = await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
        assert record.display_name == "exact"
        assert chosen == {
            "team/app": "exact", "team/web": "flat", "team/x/y": "deep", "other/z": "catch-all",
        }  # fmt: skip

    async def test_tie_refused_at_create_with_the_fix(self, core: Core) -> None:
        """A record tying with another for some repository is refused, naming the other record,
        a repository both match, and the flag that tells them apart; nothing is stored."""
        await add(core, "one", repositories=("team/a*",))
        with pytest.raises(AmbiguousRegistry) as raised:
            await add(core, "two", repositories=("team/*b",))
        message = str(raised.value)
        assert all(s in message for s in ("'one'", "team/ab", "--repositories", "reg.example"))
        await add(core, "bare")
        with pytest.raises(AmbiguousRegistry, match="neither has repository globs"):
            await add(core, "bare-two")
        stored = await core.store.find_by_host("reg.example:5000")
        assert sorted(r.display_name for r in stored) == ["bare", "one"]

    async def test_update_checks_globs(self, core: Core) -> None:
        """Changing globs is refused when it would tie; a change that keeps records apart
        takes effect for the next pull."""
        await add(core, "one", repositories=("team/a*",))
        await add(core, "two", repositories=("team/b*",))
        two = await core.registries.get("two")
        with pytest.raises(AmbiguousRegistry, match="'one'"):
            await core.registries.update(
                ADMIN_CALLER, "two", two.etag, display_name=None, registry_ca_pem=None,
                allow_basic_passthrough=None, credential=None, repositories=("team/a*",),
            )  # fmt: skip
        await core.registries.update(
            ADMIN_CALLER, "two", two.etag, display_name=None, registry_ca_pem=None,
            allow_basic_passthrough=None, credential=None, repositories=("team/c*",),
        )  # fmt: skip
        _, record = await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/cat", None, False)
        assert record.display_name == "two"

    async def test_invalid_globs_refused(self, core: Core) -> None:
        """Globs that could never match a repository are refused with an example."""
        for bad in ("/team/*", "Team/*", "team/[ab]", "", "reg.example:5000/team/*"):
            with pytest.raises(InvalidRegistry, match="repositories"):
                await add(core, "bad", repositories=(bad,))


class TestRefusals:
    """Nothing is minted for a request that fails parsing, lookup, host or policy checks."""

    async def test_invalid_reference(self, core: Core) -> None:
        """An unparsable image is InvalidReference carrying the parser's reason."""
        with pytest.raises(InvalidReference, match="UPPER"):
            await core.issuer.issue(NODE_CALLER, "reg.example/UPPER/case", None, False)

    async def test_no_registry_for_host(self, core: Core) -> None:
        """An unknown host says how to register one."""
        with pytest.raises(RegistryNotFound, match="pullbroker registry add"):
            await core.issuer.issue(NODE_CALLER, "elsewhere.example/team/app", None, False)

    async def test_ambiguous_host(self, core: Core) -> None:
        """Two records tied for a host (written before globs existed: create refuses them
        now) need an explicit choice; naming one resolves it."""
        await add(core, "one")
        one = await core.store.get_by_display_name("one")
        await core.store.create(replace(one, id="legacy-two", display_name="two", etag="e2"))
        with pytest.raises(AmbiguousRegistry, match=r"'one', 'two'.*name one in the request"):
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
        _, record = await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", "one", False)
        assert record.display_name == "one"

    async def test_host_mismatch(self, core: Core) -> None:
        """A registry named for an image on another host is refused before anything is sent."""
        await add(core)
        with pytest.raises(HostMismatch, match=r"other\.example"):
            await core.issuer.issue(NODE_CALLER, "other.example/team/app", "acme", False)
        assert core.minter.mints == []

    async def test_policy_denies(self, core: Core) -> None:
        """A repository outside the identity's grants names identity, registry and repository."""
        await add(core)
        with pytest.raises(ScopeNotAllowed) as info:
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/a/b", None, False)
        assert all(s in str(info.value) for s in (NODE, "'acme'", "team/a/b"))
        with pytest.raises(ScopeNotAllowed):
            await core.issuer.issue(ADMIN_CALLER, "reg.example:5000/team/app", None, False)
        assert core.minter.mints == []

    async def test_pending_record_is_not_used(self, core: Core) -> None:
        """A record still being created is invisible to host lookup and refused by name."""
        registry_id = await add(core)
        record = await core.store.get(registry_id)
        await core.store.replace(replace(record, state=RecordState.PENDING, etag="p"), record.etag)
        with pytest.raises(RegistryNotFound):
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
        with pytest.raises(FailedPrecondition, match="still being created"):
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", "acme", False)


class TestLogging:
    """token_issued describes the hand-out without the token; Basic pass-through is audited."""

    async def test_token_issued_event(self, core: Core) -> None:
        """A mint logs token_issued with identity, registry, scope and expiry; never the token.

        Cache hits are logged only at debug (the audit sink records every hand-out), so the
        operational log does not grow a line per pull.
        """
        registry_id = await add(core)
        with capture_logs() as logs:
            token, _ = await core.issuer.issue(
                NODE_CALLER, "reg.example:5000/team/app", None, False
            )
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
        issued = [e for e in logs if e["event"] == "token_issued"]
        assert [e["cache_hit"] for e in issued] == [False]
        assert issued[0]["log_level"] == "info"
        assert issued[0]["identity"] == NODE
        assert issued[0]["registry_id"] == registry_id
        assert issued[0]["scope"] == "repository:team/app:pull"
        assert issued[0]["expires_at"] == token.expires_at.isoformat()
        for secret in (token.token.reveal(), "stored-password"):
            assert secret not in repr(logs)

    async def test_basic_passthrough_is_audited(self, core: Core) -> None:
        """Every BASIC hand-out logs basic_passthrough_used with the identity."""
        await add(core)
        core.minter.auth_kind = AuthKind.BASIC
        with capture_logs() as logs:
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
            await core.issuer.issue(NODE_CALLER, "reg.example:5000/team/app", None, False)
        audits = [e for e in logs if e["event"] == "basic_passthrough_used"]
        assert [a["identity"] for a in audits] == [NODE, NODE]
