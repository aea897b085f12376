"""The pure address judgement: which addresses a registry client may dial, IPv6 disguises too."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pullbroker_client.registry.addresses import (
    BASELINE,
    DialPolicy,
    address_refusal,
    checked_addresses,
    embedded_ipv4,
)
from pullbroker_client.registry.errors import DialRefused

STRICT = DialPolicy()
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def _teredo(server: str, client: str) -> V6:
    """A Teredo address: 2001:0:<server>:<flags>:<port>:<client XOR 0xffffffff>."""
    flipped = int(V4(client)) ^ 0xFFFFFFFF
    return V6((0x20010000 << 96) | (int(V4(server)) << 64) | flipped)


class TestEmbeddedIPv4:
    """Every IPv6 spelling that delivers to an IPv4 address is decoded to that address."""

    @pytest.mark.parametrize(
        ("address", "carried"),
        [
            ("::ffff:169.254.169.254", ["169.254.169.254"]),  # IPv4-mapped
            ("::ffff:0:a9fe:a9fe", ["169.254.169.254"]),  # IPv4-translated (SIIT)
            ("::169.254.169.254", ["169.254.169.254"]),  # IPv4-compatible
            ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),  # NAT64 well-known prefix
            ("64:ff9b::127.0.0.1", ["127.0.0.1"]),
            ("2002:a9fe:a9fe::1", ["169.254.169.254"]),  # 6to4
            (
                str(_teredo("65.54.227.120", "169.254.169.254")),
                ["169.254.169.254", "65.54.227.120"],
            ),
            ("::1", []),  # loopback itself, not ::0.0.0.1
            ("::", []),
            ("2001:4860:4860::8888", []),
            ("fe80::1", []),
        ],
    )
    def test_decoded(self, address: str, carried: list[str]) -> None:
        """The carried IPv4 addresses, the one a packet reaches first."""
        assert [str(a) for a in embedded_ipv4(ipaddress.ip_address(address))] == carried

    @pytest.mark.parametrize(
        "address",
        [
            "64:ff9b:1:a9fe:a9:fe00::",  # RFC 6052 /48 layout (u octet skipped)
            "64:ff9b:1:00a9:fe:a9fe::",  # /56 layout
            "64:ff9b:1:0:a9:fea9:fe00:0",  # /64 layout
            "64:ff9b:1::a9fe:a9fe",  # /96 layout
        ],
    )
    def test_local_use_nat64_every_layout(self, address: str) -> None:
        """64:ff9b:1::/48 may use any RFC 6052 prefix length: each layout is decoded."""
        assert V4("169.254.169.254") in embedded_ipv4(V6(address))


class TestJudgement:
    """Always-refused ranges whatever the policy; loopback and private by the policy."""

    @pytest.mark.parametrize(
        ("address", "policy", "fragment"),
        [
            ("169.254.169.254", BASELINE, "cloud metadata service address (link-local)"),
            ("169.254.170.2", BASELINE, "metadata"),
            ("fd00:ec2::254", BASELINE, "metadata"),
            ("100.100.100.200", BASELINE, "metadata"),
            ("169.254.1.1", BASELINE, "link-local"),
            ("fe80::1", BASELINE, "link-local"),
            ("0.0.0.0", BASELINE, "unspecified"),  # noqa: S104 - the address under test
            ("0.1.2.3", BASELINE, "unspecified"),  # "this network": Linux dials the host
            ("::", BASELINE, "unspecified"),
            ("ff02::1", BASELINE, "multicast"),
            ("::ffff:169.254.169.254", BASELINE, "carries IPv4 169.254.169.254"),
            ("64:ff9b::a9fe:a9fe", BASELINE, "metadata"),
            ("64:ff9b:1::a9fe:a9fe", BASELINE, "metadata"),
            ("::a9fe:a9fe", BASELINE, "metadata"),
            ("2002:a9fe:a9fe::", BASELINE, "metadata"),
            (str(_teredo("65.54.227.120", "169.254.169.254")), BASELINE, "metadata"),
            ("127.0.0.1", STRICT, "loopback"),
            ("::1", STRICT, "loopback"),
            ("64:ff9b::7f00:1", STRICT, "carries IPv4 127.0.0.1, which is a loopback"),
            ("10.0.0.1", STRICT, "private"),
            ("::ffff:10.0.0.1", STRICT, "private"),
            ("100.64.0.1", STRICT, "private"),
            ("fc00::1", STRICT, "private"),
            ("fec0::1", STRICT, "private"),  # site-local
        ],
    )
    def test_refused(self, address: str, policy: DialPolicy, fragment: str) -> None:
        """The reason says what the address is (and what it carries)."""
        assert fragment in address_refusal(ipaddress.ip_address(address), policy)

    @pytest.mark.parametrize(
        ("address", "policy"),
        [
            ("8.8.8.8", STRICT),
            ("2001:4860:4860::8888", STRICT),
            ("64:ff9b::808:808", STRICT),  # NAT64 to a public address
            ("::ffff:8.8.8.8", STRICT),
            ("127.0.0.1", BASELINE),
            ("::ffff:127.0.0.1", BASELINE),
            ("10.1.2.3", BASELINE),
            ("192.168.1.10", DialPolicy(allow_private=True)),
        ],
    )
    def test_allowed(self, address: str, policy: DialPolicy) -> None:
        """Public addresses, and ranges the policy opens, pass."""
        assert address_refusal(ipaddress.ip_address(address), policy) == ""


def _embeddings(v4: V4) -> list[V6]:
    n = int(v4)
    return [
        V6((0xFFFF << 32) | n),  # mapped
        V6((0x0064FF9B << 96) | n),  # NAT64
        V6((0x2002 << 112) | (n << 80)),  # 6to4
        _teredo("65.54.227.120", str(v4)),
    ]


class TestEmbeddingProperties:
    """An IPv6 spelling is refused exactly when the IPv4 address it carries is."""

    @given(st.ip_addresses(v=4), st.sampled_from([STRICT, BASELINE]))
    def test_same_verdict_as_the_carried_address(self, v4: V4, policy: DialPolicy) -> None:
        """No IPv6 disguise turns a refused IPv4 address into an allowed one, or back."""
        refused = address_refusal(v4, policy) != ""
        for wrapped in _embeddings(v4):
            assert (address_refusal(wrapped, policy) != "") is refused, wrapped


class TestCheckedAddresses:
    """A host passes only when every address it resolved to passes."""

    def test_one_bad_answer_refuses_the_host(self) -> None:
        """A metadata address among public ones refuses the host, named in the error."""
        with pytest.raises(DialRefused) as caught:
            checked_addresses("mixed.test", ["8.8.8.8", "169.254.169.254"], STRICT)
        assert str(caught.value) == (
            "mixed.test resolves to 169.254.169.254, which is a cloud metadata service "
            "address (link-local): refused"
        )
        assert (caught.value.host, caught.value.address) == ("mixed.test", "169.254.169.254")

    def test_passing_answers_in_order_without_duplicates(self) -> None:
        """What passes comes back in the resolver's order, once each."""
        answers = ["8.8.8.8", "2001:4860:4860::8888", "8.8.8.8"]
        assert checked_addresses("dns.test", answers, STRICT) == [
            "8.8.8.8",
            "2001:4860:4860::8888",
        ]

    def test_link_local_with_zone_id_is_refused(self) -> None:
        """An IPv6 zone id does not hide a link-local address."""
        with pytest.raises(DialRefused, match="link-local"):
            checked_addresses("zoned.test", ["fe80::1%eth0"], BASELINE)
