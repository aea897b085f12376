"""The sidecar's Prometheus metrics, on one `CollectorRegistry` per process.

Built only when asked for (`pullbroker-sidecar run --metrics-listen HOST:PORT`): importing
prometheus-client costs about 70 ms, which `pullbroker-sidecar pull` and the node helpers
must not pay on every image pull, so this module imports it inside `SidecarMetrics()` only,
and every recording seam takes `metrics: SidecarMetrics | None`.

Labels are bounded enums (an outcome, a reason, a helper op, a byte source); never an
image, a tag, a digest, a host, an identity or a token.

    metric                                          type       labels
    pullbroker_sidecar_pulls_total                  counter    outcome
    pullbroker_sidecar_blob_bytes_total             counter    source (registry, store)
    pullbroker_sidecar_token_refreshes_total        counter    what, reason
    pullbroker_sidecar_helper_requests_total        counter    op, result
    pullbroker_sidecar_mirror_requests_total        counter    kind, status (2xx, 4xx, 5xx)
    pullbroker_sidecar_mirror_request_seconds       histogram  kind
    pullbroker_sidecar_mirror_blob_bytes_total      counter    source (store, upstream)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullbroker_sidecar.errors import (
    DaemonError,
    DestinationError,
    DigestMismatch,
    GrantMismatch,
    InsufficientSpace,
    PlatformNotFound,
    PullCancelled,
    PullError,
    SizeLimitExceeded,
    UnsupportedManifest,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

PULL_OUTCOMES = (
    "ok",
    "denied",
    "broker_unavailable",
    "broker_error",
    "registry_auth",
    "not_found",
    "registry_unreachable",
    "registry_error",
    "digest_mismatch",
    "unsupported",
    "size_limit",
    "no_space",
    "destination",
    "cancelled",
    "other",
)
REFRESH_WHATS = ("pull_token", "registry_login")
REFRESH_REASONS = ("first", "renewal", "forced", "pod")
HELPER_OPS = ("ping", "status", "registries", "login", "image_login", "other")
HELPER_RESULTS = ("ok", "not_found", "denied", "no_login", "unavailable", "bad_request", "internal")
MIRROR_KINDS = ("base", "manifest", "blob", "other")
MIRROR_STATUSES = ("2xx", "3xx", "4xx", "5xx")
MIRROR_SOURCES = ("store", "upstream")

_PULL_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (DigestMismatch, "digest_mismatch"),
    (UnsupportedManifest, "unsupported"),
    (PlatformNotFound, "not_found"),
    (SizeLimitExceeded, "size_limit"),
    (InsufficientSpace, "no_space"),
    (DestinationError, "destination"),
    (PullCancelled, "cancelled"),
    (GrantMismatch, "broker_error"),
    (PullError, "other"),
    (DaemonError, "other"),
)


def pull_outcome(exc: BaseException) -> str:
    """The `outcome` label of a failed pull (the client's errors by name, so the client's
    tree need not be imported here)."""
    for cls, outcome in _PULL_ERRORS:
        if isinstance(exc, cls):
            return outcome
    names = {c.__name__ for c in type(exc).__mro__}
    if "BrokerCallError" in names:
        code = str(getattr(getattr(exc, "code", None), "name", ""))
        if code == "PERMISSION_DENIED":
            return "denied"
        return "broker_unavailable" if code == "UNAVAILABLE" else "broker_error"
    if names & {"AuthenticationRequired", "CredentialRejected", "NotAllowed"}:
        return "registry_auth"
    if "NotFoundError" in names:
        return "not_found"
    if "RegistryUnreachable" in names:
        return "registry_unreachable"
    if "RegistryError" in names:
        return "registry_error"
    return "cancelled" if isinstance(exc, KeyboardInterrupt) else "other"


class SidecarMetrics:
    """The sidecar's metrics; `registry` is what the metrics listener serves."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry: CollectorRegistry = CollectorRegistry()
        pulls = Counter(
            "pullbroker_sidecar_pulls",
            "Image pulls by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._pulls = {o: pulls.labels(o) for o in PULL_OUTCOMES}
        blob_bytes = Counter(
            "pullbroker_sidecar_blob_bytes",
            "Bytes of image blobs a pull needed, by where they came from: registry "
            "(downloaded now) or store (already in the node content store).",
            ["source"],
            registry=self.registry,
        )
        self.bytes_fetched: Counter = blob_bytes.labels("registry")
        self.bytes_from_store: Counter = blob_bytes.labels("store")
        refreshes = Counter(
            "pullbroker_sidecar_token_refreshes",
            "Calls to the broker for a pull token or a runtime login, by reason: first (none "
            "held), renewal (near expiry), forced (the registry refused the one held), pod "
            "(a pod's own service-account token; never cached).",
            ["what", "reason"],
            registry=self.registry,
        )
        self._refreshes = {
            (w, r): refreshes.labels(w, r) for w in REFRESH_WHATS for r in REFRESH_REASONS
        }
        helper = Counter(
            "pullbroker_sidecar_helper_requests",
            "Requests from node helpers (docker credential helper, kubelet provider) on the "
            "daemon's socket, by op and result.",
            ["op", "result"],
            registry=self.registry,
        )
        self._helper = {(o, r): helper.labels(o, r) for o in HELPER_OPS for r in HELPER_RESULTS}
        self._init_mirror(Counter, Histogram)

    def _init_mirror(self, counter: type[Counter], histogram: type[Histogram]) -> None:
        requests = counter(
            "pullbroker_sidecar_mirror_requests",
            "Requests runtimes made to the node-local mirror, by kind (base is GET /v2/) and "
            "status class.",
            ["kind", "status"],
            registry=self.registry,
        )
        self._mirror_requests = {
            (k, s): requests.labels(k, s) for k in MIRROR_KINDS for s in MIRROR_STATUSES
        }
        seconds = histogram(
            "pullbroker_sidecar_mirror_request_seconds",
            "Time the mirror took to answer a request, to the last byte of its body.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120),
        )
        self._mirror_seconds = {k: seconds.labels(k) for k in MIRROR_KINDS}
        blob_bytes = counter(
            "pullbroker_sidecar_mirror_blob_bytes",
            "Blob bytes the mirror answered with, by source: upstream (this request started "
            "the blob's one download) or store (no new download: from the node store, or "
            "sharing a download another request started); a ranged answer counts its whole "
            "blob.",
            ["source"],
            registry=self.registry,
        )
        self._mirror_bytes = {s: blob_bytes.labels(s) for s in MIRROR_SOURCES}

    def mirror_request(self, kind: str, status: int, seconds: float) -> None:
        label = kind if kind in MIRROR_KINDS else "other"
        status_class = f"{status // 100}xx"
        self._mirror_requests[
            (label, status_class if status_class in MIRROR_STATUSES else "5xx")
        ].inc()
        self._mirror_seconds[label].observe(seconds)

    def mirror_blob(self, source: str, size: int) -> None:
        self._mirror_bytes[source].inc(size)

    def pulled(self, outcome: str) -> None:
        self._pulls[outcome if outcome in self._pulls else "other"].inc()

    def refreshed(self, what: str, reason: str) -> None:
        self._refreshes[(what, reason)].inc()

    def helper_request(self, op: object, result: str) -> None:
        label = op if isinstance(op, str) and op in HELPER_OPS else "other"
        self._helper[(label, result if result in HELPER_RESULTS else "internal")].inc()
