"""Service-account token verification: signature, key file, issuer, audience, times, claims.

Tokens come from a stand-in cluster issuer (tests/integration/pod_identity/cluster.py) with
real RS256/ES256 keys; the verifier reads the JWKS file it publishes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator, MutableMapping
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pullbroker_client.secret import Secret
from pullbroker_service.app import pod_identity as pod_identity_app
from pullbroker_service.app.pod_identity import (
    PodIdentityVerifier,
    identify_pod,
    load_jwks_file,
    parse_jwks,
)
from pullbroker_service.domain.errors import Unauthenticated
from pullbroker_service.domain.pod_identity import (
    PodIdentity,
    PodKeysUnavailable,
    PodTokenRejected,
)

from tests.integration.pod_identity.cluster import (
    AUDIENCE,
    ISSUER,
    ClusterKey,
    FakeCluster,
    b64url,
    claims_for,
    encode_token,
)

NOW = 1_750_000_000.0


class Clock:
    """Wall and monotonic time that tests move by hand."""

    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture(scope="module")
def cluster() -> FakeCluster:
    """An issuer with an RSA key and an ECDSA P-256 key (RSA generation is slow: once)."""
    return FakeCluster(keys=[ClusterKey.generate("ES256"), ClusterKey.generate("RS256")])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_file(cluster: FakeCluster, tmp_path: Path) -> Path:
    return cluster.publish(tmp_path / "jwks.json")


@pytest.fixture
def verifier(jwks_file: Path, clock: Clock) -> PodIdentityVerifier:
    return PodIdentityVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=jwks_file,
        clock=lambda: clock.wall,
        monotonic=lambda: clock.mono,
    )


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def rejected(verifier: PodIdentityVerifier, token: str) -> PodTokenRejected:
    """The rejection of `token`, checked not to carry the token or its signature."""
    with pytest.raises(PodTokenRejected) as caught:
        verifier.verify(Secret(token))
    message = str(caught.value)
    assert token not in message
    assert token.rsplit(".", 1)[-1] not in message
    return caught.value


class TestValidTokens:
    def test_rs256_token_gives_the_pod_identity(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """An RS256 projected token yields issuer, namespace, account, pod and node."""
        token = cluster.token("team-a", "puller", now=NOW, pod="web-7", node="n9")
        pod = verifier.verify(Secret(token))
        assert (pod.issuer, pod.namespace, pod.service_account) == (ISSUER, "team-a", "puller")
        assert (pod.pod_name, pod.node_name) == ("web-7", "n9")
        assert pod.service_account_ref == "team-a/puller"
        assert pod.pod_uid
        assert pod.service_account_uid

    def test_es256_token_verifies(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A token signed with the cluster's P-256 key is accepted too."""
        token = cluster.token("team-b", "default", key=cluster.keys[0], now=NOW)
        assert verifier.verify(Secret(token)).service_account_ref == "team-b/default"

    def test_audience_may_be_a_string_among_others(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """`aud` as a plain string, or a list holding the audience among others, is fine."""
        for audience in (AUDIENCE, ["https://kubernetes.default.svc", AUDIENCE]):
            token = cluster.token("team-a", "puller", audience=audience, now=NOW)
            assert verifier.verify(Secret(token)).namespace == "team-a"

    def test_token_bound_to_no_pod(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A TokenRequest token without pod or node claims still names its account."""
        token = cluster.token("team-a", "puller", pod=None, node=None, now=NOW)
        pod = verifier.verify(Secret(token))
        assert (pod.pod_name, pod.pod_uid, pod.node_name) == ("", "", "")

    def test_identify_without_a_token_is_none(self, verifier: PodIdentityVerifier) -> None:
        """No token (an empty proto field): no pod identity, and no error."""
        assert identify_pod(verifier, None) is None
        assert identify_pod(verifier, Secret("")) is None

    def test_unconfigured_broker_ignores_tokens(
        self,
        cluster: FakeCluster,
        logs: list[MutableMapping[str, Any]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without a verifier a token, even a forged one, gives no pod identity: warned once."""
        monkeypatch.setattr(pod_identity_app._Warned, "unconfigured", False)
        for token in (cluster.token("team-a", "puller", now=NOW), "forged"):
            assert identify_pod(None, Secret(token)) is None
        assert [e["event"] for e in logs] == ["service_account_tokens_ignored"]

    def test_expiry_within_leeway_is_accepted(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster, clock: Clock
    ) -> None:
        """A token a few seconds past `exp` passes (clock skew); the leeway is 30 s."""
        token = cluster.token("team-a", "puller", now=NOW, lifetime=600)
        clock.advance(600 + 20)
        assert verifier.verify(Secret(token)).namespace == "team-a"


class TestRejectedTokens:
    def test_wrong_audience(self, verifier: PodIdentityVerifier, cluster: FakeCluster) -> None:
        """A token for another audience (the API server's) is refused, naming the fix."""
        token = cluster.token(
            "team-a", "puller", audience="https://kubernetes.default.svc", now=NOW
        )
        error = rejected(verifier, cluster.token("team-a", "puller", audience="vault", now=NOW))
        assert "audience" in str(error)
        assert "serviceAccountTokenAudience" in str(error)
        assert isinstance(rejected(verifier, token), Unauthenticated)

    def test_wrong_issuer(self, verifier: PodIdentityVerifier, cluster: FakeCluster) -> None:
        """A token from another issuer is refused even when signed with a trusted key."""
        token = cluster.token("team-a", "puller", issuer="https://other.example", now=NOW)
        assert "issuer" in str(rejected(verifier, token))

    def test_expired(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster, clock: Clock
    ) -> None:
        """A token more than the leeway past `exp` is refused as expired."""
        token = cluster.token("team-a", "puller", now=NOW, lifetime=600)
        clock.advance(600 + 31)
        assert "expired" in str(rejected(verifier, token))

    def test_not_yet_valid(self, verifier: PodIdentityVerifier, cluster: FakeCluster) -> None:
        """A token whose `nbf` is beyond the leeway in the future is refused."""
        token = cluster.token("team-a", "puller", now=NOW + 300)
        assert "not valid before" in str(rejected(verifier, token))

    def test_legacy_token_without_expiry(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A token without `exp` (a legacy Secret-based one) is refused."""
        claims = claims_for("team-a", "puller", now=NOW)
        del claims["exp"]
        token = encode_token({"alg": "RS256", "kid": cluster.active.kid}, claims, cluster.active)
        assert "'exp'" in str(rejected(verifier, token))

    def test_tampered_claims(self, verifier: PodIdentityVerifier, cluster: FakeCluster) -> None:
        """Changing the namespace in a signed token breaks its signature."""
        header, _, signature = cluster.token("team-a", "puller", now=NOW).split(".")
        forged = claims_for("team-admin", "puller", now=NOW)
        token = f"{header}.{b64url(json.dumps(forged).encode())}.{signature}"
        assert "signature does not verify" in str(rejected(verifier, token))

    def test_foreign_key_with_a_trusted_kid(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A token signed by another key under a trusted key's kid is refused."""
        intruder = ClusterKey.generate("ES256")
        claims = claims_for("team-a", "puller", now=NOW)
        token = encode_token({"alg": "ES256", "kid": cluster.keys[0].kid}, claims, intruder)
        assert "signature does not verify" in str(rejected(verifier, token))

    def test_unknown_kid(self, verifier: PodIdentityVerifier) -> None:
        """A key the file does not publish: refused, telling the operator to refresh it."""
        stranger = FakeCluster(keys=[ClusterKey.generate("ES256")])
        error = rejected(verifier, stranger.token("team-a", "puller", now=NOW))
        assert "/openid/v1/jwks" in str(error)

    @pytest.mark.parametrize("algorithm", ["none", "HS256", "RS512", "PS256"])
    def test_other_algorithms(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster, algorithm: str
    ) -> None:
        """Only RS256 and ES256 are accepted: no `none`, no HMAC keyed with a public key."""
        header = b64url(json.dumps({"alg": algorithm, "kid": cluster.active.kid}).encode())
        body = b64url(json.dumps(claims_for("team-a", "puller", now=NOW)).encode())
        public_jwk = json.dumps(cluster.active.jwk()).encode()
        mac = hmac.new(public_jwk, f"{header}.{body}".encode(), sha256).digest()
        token = f"{header}.{body}.{b64url(mac)}"
        assert "algorithm" in str(rejected(verifier, token))

    def test_algorithm_swapped_between_key_types(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """An ES256 signature presented as RS256 (or the reverse) does not verify."""
        es_key, rs_key = cluster.keys
        claims = claims_for("team-a", "puller", now=NOW)
        for claimed, signer in (("RS256", es_key), ("ES256", rs_key)):
            token = encode_token({"alg": claimed}, claims, signer)
            rejected(verifier, token)

    def test_subject_must_match_the_kubernetes_claims(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """`sub` naming another account than `kubernetes.io` does is refused."""
        claims = claims_for("team-a", "puller", now=NOW)
        claims["sub"] = "system:serviceaccount:kube-system:admin"
        token = encode_token({"alg": "RS256", "kid": cluster.active.kid}, claims, cluster.active)
        assert "subject" in str(rejected(verifier, token))

    def test_names_must_be_kubernetes_names(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A namespace with a "/" cannot smuggle a fake NAMESPACE/NAME past the policy."""
        claims = claims_for("team-a", "puller", now=NOW)
        claims["kubernetes.io"]["namespace"] = "team-a/puller"
        claims["sub"] = "system:serviceaccount:team-a/puller:puller"
        token = encode_token({"alg": "RS256", "kid": cluster.active.kid}, claims, cluster.active)
        assert "valid Kubernetes name" in str(rejected(verifier, token))

    def test_not_a_kubernetes_token(
        self, verifier: PodIdentityVerifier, cluster: FakeCluster
    ) -> None:
        """A correctly signed token without kubernetes.io claims is refused."""
        claims = claims_for("team-a", "puller", now=NOW)
        del claims["kubernetes.io"]
        token = encode_token({"alg": "RS256", "kid": cluster.active.kid}, claims, cluster.active)
        assert "kubernetes.io" in str(rejected(verifier, token))

    @pytest.mark.parametrize(
        "token",
        ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.***", "bnVsbA.e30.c2ln"],
    )
    def test_malformed(self, verifier: PodIdentityVerifier, token: str) -> None:
        """Garbage is refused as a rejected token, never an internal error."""
        with pytest.raises(PodTokenRejected):
            verifier.verify(Secret(token))

    def test_oversized(self, verifier: PodIdentityVerifier) -> None:
        """A token over 16 KiB is refused before any parsing."""
        assert "longer than" in str(rejected(verifier, "a" * 20_000))


class TestKeyFile:
    def test_missing_file_fails_at_start(self, tmp_path: Path) -> None:
        """A broker configured with a key file that is not there refuses to start."""
        with pytest.raises(PodKeysUnavailable, match="cannot read"):
            PodIdentityVerifier(
                issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "missing.json"
            )

    def test_unusable_keys_are_skipped(self, tmp_path: Path) -> None:
        """Encryption keys, small RSA keys, other curves and junk are ignored; none left fails."""
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 - the point
        p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
        good = ClusterKey.generate("ES256").jwk()
        entries: list[object] = [
            {**good, "use": "enc"},
            {"kty": "RSA", "n": b64url(small.public_numbers().n.to_bytes(128, "big")), "e": "AQAB"},
            {
                "kty": "EC",
                "crv": "P-384",
                "x": b64url(p384.x.to_bytes(48, "big")),
                "y": b64url(p384.y.to_bytes(48, "big")),
            },
            {"kty": "EC", "crv": "P-256", "x": good["x"], "y": good["x"]},  # not on the curve
            {"kty": "oct", "k": "c2VjcmV0"},
            "junk",
        ]
        assert parse_jwks({"keys": entries}) == ()
        assert len(parse_jwks({"keys": [*entries, good]})) == 1
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": entries}))
        with pytest.raises(PodKeysUnavailable, match="no RS256 or ES256"):
            load_jwks_file(path)

    def test_not_json(self, tmp_path: Path) -> None:
        """A file that is not JSON names the file and what belongs in it."""
        path = tmp_path / "jwks.json"
        path.write_text("-----BEGIN PUBLIC KEY-----")
        with pytest.raises(PodKeysUnavailable, match="/openid/v1/jwks"):
            load_jwks_file(path)

    def test_rotation_is_picked_up_at_once(
        self, verifier: PodIdentityVerifier, jwks_file: Path, cluster: FakeCluster, clock: Clock
    ) -> None:
        """A token with a new kid re-reads a refreshed file without waiting for the interval
        (10 s), at most once a second."""
        rotated = FakeCluster(keys=[*cluster.keys, ClusterKey.generate("ES256")])
        token = rotated.token("team-a", "puller", now=NOW)
        rejected(verifier, token)  # not yet published
        rotated.publish(jwks_file)
        rejected(verifier, token)  # checked less than a second ago
        clock.advance(1.5)
        assert verifier.verify(Secret(token)).namespace == "team-a"

    def test_removed_key_stops_verifying_after_the_interval(
        self, verifier: PodIdentityVerifier, jwks_file: Path, cluster: FakeCluster, clock: Clock
    ) -> None:
        """A key dropped from the file is no longer trusted once the file is checked again."""
        token = cluster.token("team-a", "puller", key=cluster.keys[0], now=NOW)
        assert verifier.verify(Secret(token)).namespace == "team-a"
        FakeCluster(keys=[cluster.keys[1]]).publish(jwks_file)
        clock.advance(11)
        rejected(verifier, token)

    def test_broken_refresh_keeps_the_last_good_keys(
        self,
        verifier: PodIdentityVerifier,
        jwks_file: Path,
        cluster: FakeCluster,
        clock: Clock,
        logs: list[MutableMapping[str, Any]],
    ) -> None:
        """A refresh that writes junk is logged once, and the previous keys stay in force."""
        token = cluster.token("team-a", "puller", now=NOW)
        jwks_file.write_text("{not json")
        for _ in range(3):
            clock.advance(11)
            assert verifier.verify(Secret(token)).namespace == "team-a"
        assert [e["event"] for e in logs] == ["pod_keys_reload_failed"]

    def test_tokens_never_reach_the_logs(
        self,
        verifier: PodIdentityVerifier,
        jwks_file: Path,
        cluster: FakeCluster,
        clock: Clock,
        logs: list[MutableMapping[str, Any]],
    ) -> None:
        """Accepted and refused tokens, and key reloads, log nothing of any token."""
        good = cluster.token("team-a", "puller", now=NOW)
        bad = cluster.token("team-a", "puller", audience="other", now=NOW)
        stranger = FakeCluster(keys=[ClusterKey.generate("ES256")]).token("x", "y", now=NOW)
        verifier.verify(Secret(good))
        for token in (bad, stranger):
            rejected(verifier, token)
        FakeCluster(keys=[*cluster.keys, ClusterKey.generate("ES256")]).publish(jwks_file)
        clock.advance(11)
        verifier.verify(Secret(good))
        text = json.dumps(logs, default=str)
        assert "pod_keys_reloaded" in text
        for token in (good, bad, stranger):
            for part in token.split("."):
                assert part not in text


class TestPodIdentity:
    def test_decision_key_leaves_out_pod_and_uids(self) -> None:
        """Two pods of one service account share a decision key; another account does not."""
        a = PodIdentity(ISSUER, "team-a", "puller", "uid-1", "web-0", "p-1", "n1")
        b = PodIdentity(ISSUER, "team-a", "puller", "uid-1", "web-1", "p-2", "n2")
        c = PodIdentity(ISSUER, "team-a", "builder")
        assert a.decision_key == b.decision_key != c.decision_key
        assert a.describe() == "service account team-a/puller"
