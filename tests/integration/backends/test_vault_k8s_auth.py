"""Kubernetes service-account login to real OpenBao.

OpenBao's kubernetes auth asks the cluster's TokenReview API whether a service-account JWT is
valid. No Kubernetes API server runs here, so a small HTTPS TokenReview endpoint stands in for
it (the only fake in this directory); OpenBao, the auth plugin and our adapter are real.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import PermissionDenied
from pullbroker_service.secrets.vault import VaultSecretBackend
from pullbroker_service.secrets.vault_auth import FileSource, KubernetesAuth, VaultSession

from tests.harness.certs import TestCA
from tests.harness.https_server import HTTPSServer, Reply, Request, json_reply
from tests.harness.jwt_signer import b64url
from tests.integration.backends.conftest import POLICY_NAME, VaultWorld, write_secret_file

pytestmark = pytest.mark.integration

NAMESPACE, ACCOUNT, ACCOUNT_UID = "pullbroker", "broker", str(uuid.uuid4())


def service_account_jwt() -> Secret:
    """A JWT shaped like a projected service-account token (ES256, throwaway key)."""
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc",
        "sub": f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}",
        "aud": ["https://kubernetes.default.svc"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "kubernetes.io": {
            "namespace": NAMESPACE,
            "serviceaccount": {"name": ACCOUNT, "uid": ACCOUNT_UID},
        },
    }
    header = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    signature = b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return Secret(f"{header}.{body}.{signature}")


class TokenReview:
    """POST /apis/authentication.k8s.io/v1/tokenreviews: authenticated iff the token is known.

    A handler on the harness HTTPSServer."""

    def __init__(self, ca: TestCA) -> None:
        self.known: set[str] = set()
        self.server = HTTPSServer(self.handle, ca, name="k8s-api")

    @property
    def reviews(self) -> int:
        return self.server.count("/apis/authentication.k8s.io/v1/tokenreviews")

    def handle(self, request: Request) -> Reply:
        spec = request.json().get("spec", {})
        ok = spec.get("token") in self.known
        status: dict[str, object] = {"authenticated": ok}
        if ok:
            status["audiences"] = spec.get("audiences") or []  # OpenBao checks they intersect
            status["user"] = {
                "username": f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}",
                "uid": ACCOUNT_UID,  # OpenBao checks it against the JWT's claim
                "groups": ["system:serviceaccounts"],
            }
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
        return json_reply(201, review)


@pytest.fixture
def token_review(backends_ca: TestCA) -> Iterator[TokenReview]:
    """The TokenReview stand-in over TLS, knowing no token yet."""
    review = TokenReview(backends_ca)
    with review.server:
        yield review


@pytest.fixture
def kubernetes_mount(
    vault_dev: VaultWorld, token_review: TokenReview, backends_ca: TestCA
) -> Iterator[str]:
    """A kubernetes auth mount pointed at the stand-in, with role `broker` for our account."""
    mount = f"k8s-{uuid.uuid4().hex[:6]}"
    root = vault_dev.root()
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.auth.kubernetes.configure(
        kubernetes_host=f"https://127.0.0.1:{token_review.server.port}",
        kubernetes_ca_cert=backends_ca.pem,
        disable_local_ca_jwt=True,
        mount_point=mount,
    )
    root.auth.kubernetes.create_role(
        name="broker",
        bound_service_account_names=[ACCOUNT],
        bound_service_account_namespaces=[NAMESPACE],
        policies=[POLICY_NAME],
        ttl="1h",
        mount_point=mount,
    )
    yield mount
    root.sys.disable_auth_method(path=mount)


class TestKubernetesAuth:
    """Login with the pod's service-account token file."""

    async def test_login_with_service_account_token(
        self,
        vault_dev: VaultWorld,
        token_review: TokenReview,
        kubernetes_mount: str,
        prefix: str,
        tmp_path: Path,
    ) -> None:
        """A JWT from the token file, accepted by TokenReview, logs in; the backend works."""
        jwt = service_account_jwt()
        token_review.known.add(jwt.reveal())
        auth = KubernetesAuth(
            "broker", FileSource(write_secret_file(tmp_path / "token", jwt)), kubernetes_mount
        )
        backend = VaultSecretBackend(VaultSession(vault_dev.connection(), auth), prefix=prefix)
        ref = await backend.put("reg1", b"x")
        assert await backend.get(ref) == b"x"
        assert token_review.reviews == 1
        await backend.close()

    async def test_rejected_token_is_denied_clearly(
        self,
        vault_dev: VaultWorld,
        token_review: TokenReview,
        kubernetes_mount: str,
        prefix: str,
        tmp_path: Path,
    ) -> None:
        """A JWT the cluster rejects gives PermissionDenied naming the role, without the JWT."""
        jwt = service_account_jwt()
        auth = KubernetesAuth(
            "broker", FileSource(write_secret_file(tmp_path / "token", jwt)), kubernetes_mount
        )
        backend = VaultSecretBackend(VaultSession(vault_dev.connection(), auth), prefix=prefix)
        with pytest.raises(PermissionDenied, match="'broker'") as caught:
            await backend.check()
        assert jwt.reveal() not in str(caught.value)
        assert token_review.reviews == 1
        await backend.close()
