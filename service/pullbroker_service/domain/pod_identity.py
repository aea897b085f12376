"""The Kubernetes pod behind a pull: who a verified service-account token says it is.

kubelet gives an image credential provider the pod's projected service-account token when
the CredentialProviderConfig asks for `tokenAttributes`; the node forwards it in
IssuePullToken/IssueRegistryLogin, app/pod_identity.py checks its signature, and the claims
are checked and read here. Policy rules with a `kubernetes:` key (domain/policy.py) then
grant pulls by namespace and service account.

The claims of a projected token (Kubernetes 1.21+; `node` from 1.30):

    {"iss": ISSUER, "sub": "system:serviceaccount:NS:NAME", "aud": ["pullbroker"],
     "exp": ..., "iat": ..., "nbf": ...,
     "kubernetes.io": {"namespace": NS, "serviceaccount": {"name": NAME, "uid": ...},
                       "pod": {"name": ..., "uid": ...}, "node": {"name": ..., "uid": ...}}}

Messages never hold the token; they may quote a claim (an issuer, an audience), which is
not secret, shortened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pullbroker_service.domain.errors import FailedPrecondition, Unauthenticated

# Namespaces are DNS labels and service-account names DNS subdomains. Checking the shape
# keeps a "/" (or a glob character) out of "NAMESPACE/NAME", which policy globs match.
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_ACCOUNT = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
_QUOTE_LIMIT = 120


class PodTokenRejected(Unauthenticated):
    """A service-account token that fails a check. The message says which, never the token."""


class PodKeysUnavailable(FailedPrecondition):
    """The cluster's signing keys cannot be read: an operator must fix the key file."""


@dataclass(frozen=True)
class PodIdentity:
    """A pod's identity, from a token whose signature, issuer, audience and times were checked.

    issuer: the cluster's service-account issuer (`iss`).
    namespace, service_account: what policy rules match ("NAMESPACE/NAME" for accounts).
    service_account_uid, pod_name, pod_uid, node_name: for audit; "" when the token has none
    (a token from `kubectl create token` is bound to no pod).
    """

    issuer: str
    namespace: str
    service_account: str
    service_account_uid: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    node_name: str = ""

    @property
    def service_account_ref(self) -> str:
        """ "NAMESPACE/NAME", the form `kubernetes.service_accounts` globs match."""
        return f"{self.namespace}/{self.service_account}"

    @property
    def decision_key(self) -> tuple[str, str, str]:
        """What policy decisions depend on (pod and uids do not): a memo key."""
        return self.issuer, self.namespace, self.service_account

    def describe(self) -> str:
        """The words policy decisions use; no pod name, as pods of one account share them."""
        return f"service account {self.service_account_ref}"


@dataclass(frozen=True)
class TokenExpectations:
    """What a token must show besides a good signature.

    issuer: `iss` must equal it. audience: `aud` must contain it. leeway_seconds: clock skew
    allowed on `exp`, `nbf` and `iat`.
    """

    issuer: str
    audience: str
    leeway_seconds: float = 30.0


def identity_from_claims(
    claims: Mapping[str, object], expect: TokenExpectations, now: float
) -> PodIdentity:
    """The PodIdentity in `claims` (the signature was already verified), or PodTokenRejected."""
    _check_issuer(claims, expect.issuer)
    _check_audience(claims, expect.audience)
    _check_times(claims, now, expect.leeway_seconds)
    return _read_kubernetes(claims, expect.issuer)


def _check_issuer(claims: Mapping[str, object], issuer: str) -> None:
    found = claims.get("iss")
    if found != issuer:
        raise PodTokenRejected(
            f"service-account token issuer {_quote(found)} is not the configured issuer "
            f"{issuer!r}: the token comes from another cluster, or kubernetes_issuer must be "
            "the cluster's --service-account-issuer"
        )


def _check_audience(claims: Mapping[str, object], audience: str) -> None:
    found = claims.get("aud")
    audiences = [found] if isinstance(found, str) else found
    if not isinstance(audiences, list) or audience not in audiences:
        raise PodTokenRejected(
            f"service-account token audience {_quote(found)} does not include {audience!r}: "
            "set tokenAttributes.serviceAccountTokenAudience in the kubelet "
            f"CredentialProviderConfig to {audience!r}"
        )


def _check_times(claims: Mapping[str, object], now: float, leeway: float) -> None:
    expires = _number(claims, "exp", required=True)
    if expires is not None and now > expires + leeway:
        raise PodTokenRejected(
            f"service-account token expired at {_when(expires)}: kubelet sends a fresh one "
            "with each request (check the clocks of node and broker)"
        )
    not_before = _number(claims, "nbf", required=False)
    if not_before is not None and now + leeway < not_before:
        raise PodTokenRejected(
            f"service-account token is not valid before {_when(not_before)}: check the "
            "clocks of the cluster and the broker"
        )
    issued = _number(claims, "iat", required=False)
    if issued is not None and now + leeway < issued:
        raise PodTokenRejected(
            f"service-account token was issued in the future ({_when(issued)}): check the "
            "clocks of the cluster and the broker"
        )


def _number(claims: Mapping[str, object], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        need = "has no" if value is None else "has a non-numeric"
        raise PodTokenRejected(
            f"service-account token {need} {name!r} claim: only bound, expiring tokens "
            "(projected or TokenRequest) are accepted, not legacy Secret-based ones"
        )
    return float(value)


def _read_kubernetes(claims: Mapping[str, object], issuer: str) -> PodIdentity:
    k8s = _mapping(claims.get("kubernetes.io"))
    namespace = k8s.get("namespace")
    account = _mapping(k8s.get("serviceaccount"))
    name = account.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise PodTokenRejected(
            "service-account token has no kubernetes.io namespace and serviceaccount.name "
            "claims: it is not a Kubernetes service-account token"
        )
    if not _NAMESPACE.fullmatch(namespace) or not _ACCOUNT.fullmatch(name):
        raise PodTokenRejected(
            "service-account token names a namespace or service account that is not a valid "
            "Kubernetes name"
        )
    if claims.get("sub") != f"system:serviceaccount:{namespace}:{name}":
        raise PodTokenRejected(
            "service-account token subject does not match its kubernetes.io claims"
        )
    pod, node = _mapping(k8s.get("pod")), _mapping(k8s.get("node"))
    return PodIdentity(
        issuer=issuer,
        namespace=namespace,
        service_account=name,
        service_account_uid=_text(account.get("uid")),
        pod_name=_text(pod.get("name")),
        pod_uid=_text(pod.get("uid")),
        node_name=_text(node.get("name")),
    )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


def _when(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp:.0f} (out of range)"
