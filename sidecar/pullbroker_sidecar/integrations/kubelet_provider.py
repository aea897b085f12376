"""`pullbroker-credential-provider`: a kubelet image credential provider plugin.

kubelet runs it for images matching the provider's `matchImages` (see
deploy/kubernetes/credential-provider-config.yaml) and writes a
`credentialprovider.kubelet.k8s.io/v1` CredentialProviderRequest on stdin:

    {"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest",
     "image": "registry.example.com:5000/team/app@sha256:...",
     "serviceAccountToken": "...", "serviceAccountAnnotations": {...}}   (when configured)

It answers on stdout with a CredentialProviderResponse of the same apiVersion:

- `auth` has one key, the most specific one: `host[:port]/repository`, so the login
  answers for exactly the repository asked about (kubelet matches keys by host, port and
  path prefix); `cacheKeyType: Image` caches it per image;
- `cacheDuration` is half of the login's remaining life (whole seconds, rounded down), so
  kubelet never holds it past its expiry;
- with a service-account token, `serviceAccountTokenCacheType: ServiceAccount` (required
  by kubelet when a token was sent; the login depends on the node and the image, not the
  pod). The token is forwarded to the broker through the daemon (`image_login`'s
  `service_account_token`), so the broker's namespace and service-account rules decide
  for the pod; it is neither logged nor written anywhere, and such logins are never cached
  by the daemon.
- no login for the image (not granted, or a registry that gives this node bearer tokens
  only - see daemon/login_cache.py): a response without `auth`, not cached, and the reason on
  stderr; kubelet then pulls anonymously (and fails for a private image).

Identity tokens (an ACR service principal's refresh token). kubelet's `auth` entries have a
username and a password only - no `identitytoken` - and containerd (CRI) runs the realm's
refresh-token grant only for an empty username, which kubelet cannot send. A refresh token
is answered as the password of the login's username instead: ACR pairs it with the user
00000000-0000-0000-0000-000000000000 (what `az acr login --expose-token` hands `docker
login`), which its realm accepts with Basic auth, and containerd falls back to exactly that
when the password grant is refused. An identity token without such a username has no form
kubelet can carry, and is refused (no `auth`, the reason on stderr).

The login comes from the node daemon over its socket (this program holds no certificate
and imports only the standard library), so a pod start costs no TLS handshake.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from pullbroker_sidecar.daemon.protocol import IDENTITY_TOKEN_USERNAME, ask, default_socket
from pullbroker_sidecar.errors import DaemonUnavailable

KIND_REQUEST = "CredentialProviderRequest"
KIND_RESPONSE = "CredentialProviderResponse"
API_VERSIONS = (
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
)
_MAX_REQUEST = 1 << 20


class BadRequest(Exception):
    """The request on stdin is not a CredentialProviderRequest."""


def parse_request(text: str) -> dict[str, Any]:
    """The request, checked: kind, a known apiVersion, a non-empty image."""
    try:
        request = json.loads(text)
    except ValueError:
        raise BadRequest("stdin is not JSON: expected a CredentialProviderRequest") from None
    if not isinstance(request, dict) or request.get("kind") != KIND_REQUEST:
        raise BadRequest(f"stdin is not a {KIND_REQUEST}")
    if request.get("apiVersion") not in API_VERSIONS:
        raise BadRequest(f"unsupported apiVersion {str(request.get('apiVersion'))[:80]!r}")
    image = request.get("image")
    if not isinstance(image, str) or not image.strip():
        raise BadRequest(f"the {KIND_REQUEST} has no image")
    return request


def build_response(
    request: dict[str, Any], answer: dict[str, Any], now: float | None = None
) -> dict[str, Any]:
    """The CredentialProviderResponse for the daemon's `answer` to an image_login."""
    response: dict[str, Any] = {
        "kind": KIND_RESPONSE,
        "apiVersion": request["apiVersion"],
        "cacheKeyType": "Image",
        "cacheDuration": "0s",
    }
    if request.get("serviceAccountToken"):
        response["serviceAccountTokenCacheType"] = "ServiceAccount"
    if not answer.get("ok") or unusable(answer):
        return response
    remaining = float(answer["expires_at"]) - (time.time() if now is None else now)
    response["cacheDuration"] = f"{max(0, int(remaining // 2))}s"
    response["auth"] = {
        str(answer["key"]): {
            "username": str(answer.get("username", "")),
            "password": str(answer.get("secret", "")),
        }
    }
    return response


def unusable(answer: dict[str, Any]) -> str:
    """Why kubelet cannot use the daemon's login ("" when it can): an identity token whose
    registry names no username to pair it with (see the module docstring)."""
    username = str(answer.get("username", ""))
    if answer.get("identity_token") and username in ("", IDENTITY_TOKEN_USERNAME):
        return (
            "the registry's login is an identity (refresh) token without a username, which "
            "kubelet cannot pass on: pull the image with `pullbroker-sidecar pull IMAGE --dest "
            "containerd` instead"
        )
    return ""


def main(stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Entry point; returns the exit status."""
    source = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    try:
        request = parse_request(source.read(_MAX_REQUEST))
    except BadRequest as exc:
        print(f"pullbroker-credential-provider: {exc}", file=sys.stderr)
        return 1
    try:
        message = {"op": "image_login", "image": request["image"].strip()}
        pod_token = request.get("serviceAccountToken")
        if isinstance(pod_token, str) and pod_token:
            # For the broker's pod-scoped policy; never logged or stored on the node.
            message["service_account_token"] = pod_token
        answer = ask(default_socket(), message)
    except DaemonUnavailable as exc:
        print(f"pullbroker-credential-provider: {exc}", file=sys.stderr)
        return 1
    why = answer.get("message", "refused") if not answer.get("ok") else unusable(answer)
    if why:
        print(
            f"pullbroker-credential-provider: no credential for {request['image']}: {why}",
            file=sys.stderr,
        )
    out.write(json.dumps(build_response(request, answer)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
