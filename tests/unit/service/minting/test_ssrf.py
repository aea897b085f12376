"""SSRF: registry URLs and token realms on link-local, metadata, private or loopback addresses
are refused with a clear message; loopback only where the configuration allows it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pullbroker_client.registry.addresses import checked_addresses
from pullbroker_client.registry.errors import DialRefused
from pullbroker_service.domain.errors import InvalidRegistry, UpstreamProtocolError
from pullbroker_service.domain.hosts import (
    DialPolicy,
    check_dialable,
    normalize_registry_url,
)
from pullbroker_service.domain.model import RegistryKind, RegistryRecord
from pullbroker_service.minting.bearer import BearerMinter

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request

STRICT = DialPolicy()
LOOPBACK_OK = DialPolicy(allow_loopback=True)
PRIVATE_OK = DialPolicy(allow_private=True)


class TestLiteralAddresses:
    """Literal hosts are judged as written, whatever the policy allows for the rest."""

    @pytest.mark.parametrize(
        ("host", "policy", "fragment"),
        [
            ("169.254.169.254", LOOPBACK_OK, "metadata service address (link-local)"),
            ("fd00:ec2::254", PRIVATE_OK, "metadata service"),
            ("::ffff:169.254.169.254", PRIVATE_OK, "metadata service"),  # IPv4-mapped
            ("169.254.10.1", PRIVATE_OK, "link-local"),
            ("fe80::1", PRIVATE_OK, "link-local"),
            ("0.0.0.0", PRIVATE_OK, "unspecified"),  # noqa: S104 - the address under test
            ("224.0.0.1", PRIVATE_OK, "multicast"),
            ("127.0.0.1", STRICT, "loopback address"),
            ("::1", STRICT, "loopback address"),
            ("10.1.2.3", STRICT, "private or reserved"),
            ("172.16.0.9", LOOPBACK_OK, "private or reserved"),
            ("192.168.1.1", STRICT, "private or reserved"),
            ("100.64.0.1", STRICT, "private or reserved"),  # carrier-grade NAT
            ("fc00::1", STRICT, "private or reserved"),
            ("127.0.0.1", PRIVATE_OK, "loopback"),  # private does not imply loopback
        ],
    )
    def test_refused(self, host: str, policy: DialPolicy, fragment: str) -> None:
        """The message names the field, the host and why it is refused."""
        with pytest.raises(InvalidRegistry, match=re.escape(fragment)) as caught:
            check_dialable(host, "registry url", policy)
        assert str(caught.value).startswith(f"registry url host {host}")

    @pytest.mark.parametrize(
        ("host", "policy"),
        [
            ("127.0.0.1", LOOPBACK_OK),
            ("10.1.2.3", PRIVATE_OK),
            ("8.8.8.8", STRICT),
            ("2001:4860:4860::8888", STRICT),
            ("registry.example.com", STRICT),
        ],
    )
    def test_allowed(self, host: str, policy: DialPolicy) -> None:
        """Public addresses, names, and ranges the policy opens pass."""
        check_dialable(host, "registry url", policy)

    def test_loopback_refusal_says_how_to_allow_it(self) -> None:
        """Refusing loopback names the setting that allows it."""
        with pytest.raises(InvalidRegistry, match="allow_loopback_registries"):
            check_dialable("127.0.0.1", "registry url", STRICT)

    @pytest.mark.parametrize("host", ["2852039166", "0xa9fea9fe", "registry.0x7f", "1.2.3.4.5"])
    def test_disguised_numeric_hosts(self, host: str) -> None:
        """Names resolvers would read as IPv4 (decimal, hex) are refused at validation."""
        with pytest.raises(InvalidRegistry, match="non-standard form"):
            check_dialable(host, "url")


class TestValidation:
    """Creating a record refuses what is never dialled; loopback is judged at dial time."""

    @pytest.mark.parametrize(
        ("url", "fragment"),
        [
            ("https://169.254.169.254", "metadata"),
            ("https://[fd00:ec2::254]:5000", "metadata"),
            ("https://[fe80::1]", "link-local"),
            ("https://metadata.google.internal", "metadata"),
            ("https://2852039166", "non-standard"),
        ],
    )
    def test_refused_urls(self, url: str, fragment: str) -> None:
        """These URLs never become records."""
        with pytest.raises(InvalidRegistry, match=fragment):
            normalize_registry_url(url)

    def test_loopback_url_is_left_to_the_dial_policy(self) -> None:
        """A loopback URL validates; whether it is dialled is the broker's dial policy."""
        assert normalize_registry_url("https://127.0.0.1:5000") == (
            "https://127.0.0.1:5000",
            "127.0.0.1:5000",
        )


class FakeResolver:
    """Answers from a table and counts lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError("name does not resolve")
        return self.answers[host]


class TestResolvedNames:
    """A name is judged by every address it resolves to (the guard every connection uses)."""

    def test_every_address_counts(self) -> None:
        """One metadata address among public ones refuses the name."""
        with pytest.raises(DialRefused, match=r"resolves to 169\.254\.169\.254"):
            checked_addresses("mixed.example", ["8.8.8.8", "169.254.169.254"], STRICT)

    def test_ipv6_disguise_counts(self) -> None:
        """An address carrying a metadata IPv4 address through NAT64 refuses the name."""
        with pytest.raises(DialRefused, match=r"carries IPv4 169\.254\.169\.254"):
            checked_addresses("nat64.example", ["64:ff9b::a9fe:a9fe"], PRIVATE_OK)


def record_for(url: str, ca_pem: str) -> RegistryRecord:
    now = datetime.now(UTC)
    host = url.removeprefix("https://")
    return RegistryRecord(
        "r1", "ssrf", RegistryKind.GENERIC, url, host, "", ca_pem, "", False, 0, None, "",
        now, now, "e",
    )  # fmt: skip


@pytest.fixture
def https_registry(test_ca: TestCA) -> Iterator[HTTPSServer]:
    server = HTTPSServer(lambda _r: Reply(401, {"WWW-Authenticate": 'Bearer realm="x"'}), test_ca)
    with server:
        yield server


class TestMinterDials:
    """The minter asks the guard before it dials the registry and the token realm."""

    async def test_strict_minter_does_not_dial_loopback(
        self, https_registry: HTTPSServer, test_ca: TestCA
    ) -> None:
        """Under the default policy a loopback registry is refused and never contacted."""
        minter = BearerMinter(timeout=5.0, dial_policy=STRICT)
        try:
            record = record_for(f"https://localhost:{https_registry.port}", test_ca.pem)
            with pytest.raises(InvalidRegistry, match="loopback"):
                await minter.mint(record, None, "team/app")
            with pytest.raises(InvalidRegistry, match="loopback"):
                await minter.probe(record, None, "team/app")
        finally:
            await minter.aclose()
        assert https_registry.requests == []

    async def test_minter_without_a_policy_is_strict(
        self, https_registry: HTTPSServer, test_ca: TestCA
    ) -> None:
        """A minter built with no dial policy refuses loopback too: safe by default."""
        minter = BearerMinter(timeout=5.0)
        try:
            record = record_for(f"https://localhost:{https_registry.port}", test_ca.pem)
            with pytest.raises(InvalidRegistry, match="loopback"):
                await minter.mint(record, None, "team/app")
        finally:
            await minter.aclose()
        assert https_registry.requests == []

    @pytest.mark.parametrize(
        ("realm", "fragment"),
        [
            ("https://169.254.169.254/token", "metadata"),
            ("https://[fd00:ec2::254]/token", "metadata"),
            ("https://10.20.30.40/token", "private"),
            ("https://192.168.0.10:8443/token", "private"),
        ],
    )
    async def test_realm_on_forbidden_address(
        self, test_ca: TestCA, tmp_path: Path, realm: str, fragment: str
    ) -> None:
        """A registry pointing its realm at such an address gets no credential sent there."""

        def handler(_request: Request) -> Reply:
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="t"'})

        minter = BearerMinter(timeout=5.0, dial_policy=LOOPBACK_OK)
        with HTTPSServer(handler, test_ca) as server:
            record = record_for(server.url(), test_ca.pem)
            try:
                with pytest.raises(UpstreamProtocolError, match=f"must not dial.*{fragment}"):
                    await minter.mint(record, None, "team/app")
            finally:
                await minter.aclose()
        assert [r.path for r in server.requests] == ["/v2/"]  # the ping only
