"""Every Prometheus metric the broker exports, on one `CollectorRegistry` per broker.

Built once by bootstrap/main.py when `metrics_listen` is set, and handed to the seams that
record (token_guard, the token cache, the rate limiter, the secret backend guard and its
watch); with no listener configured nothing is built and nothing is recorded.

Labels are bounded enums only: an RPC name, a registry kind, an outcome or failure class, a
secret backend name, an operation. Never a secret, a token, an identity, an image, a tag, a
digest, a registry id or a host: a label value is a new time series for ever, and a scrape
is read by people and systems that must not see who pulled what.

The token hot path (IssuePullToken on a cache hit) pays a dict lookup and one counter
increment per call: the children of every (rpc, kind, outcome) are bound here, at start,
so no call goes through `.labels()` (which takes a lock and builds a tuple key).

    metric                                          type       labels
    pullbroker_token_requests_total                 counter    rpc, kind, outcome
    pullbroker_token_cache_lookups_total            counter    result (hit, miss, coalesced)
    pullbroker_token_cache_entries                  gauge      -
    pullbroker_token_cache_bytes                    gauge      -
    pullbroker_upstream_mint_seconds                histogram  kind
    pullbroker_upstream_mint_failures_total         counter    kind, reason
    pullbroker_upstream_backoffs                    gauge      -
    pullbroker_policy_denials_total                 counter    rpc
    pullbroker_rate_limited_calls_total             counter    call
    pullbroker_secret_backend_up                    gauge      backend
    pullbroker_secret_backend_seconds               histogram  backend, operation
    pullbroker_secret_backend_failures_total        counter    backend, operation
    pullbroker_certificate_expiry_days              gauge      certificate (serving, client_ca)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pullbroker_service.domain.errors import (
    BackendUnavailable,
    BrokerError,
    CredentialRejected,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PullNotAllowed,
    QuotaExceeded,
    RateLimited,
    RegistryTLSFailure,
    RegistryUnreachable,
    Unauthenticated,
    UpstreamError,
    UpstreamProtocolError,
)
from pullbroker_service.domain.model import RegistryKind

RPCS = ("IssuePullToken", "IssueRegistryLogin")
LIMITED_CALLS = ("IssuePullToken", "TestConnection")
"""app/ratelimit.py's LimitKind values, bound at start so dashboards see zeros, not gaps."""
NO_KIND = "none"
"""The kind label of a call refused before a registry was chosen (bad image, no record)."""
KINDS = (*(k.value for k in RegistryKind), NO_KIND)
OUTCOME_ISSUED = "issued"
OUTCOME_CANCELLED = "cancelled"
OUTCOME_INTERNAL = "internal"
OUTCOMES = (
    OUTCOME_ISSUED,
    "denied",
    "rate_limited",
    "invalid",
    "not_found",
    "upstream_error",
    "backend_unavailable",
    OUTCOME_CANCELLED,
    OUTCOME_INTERNAL,
)
FAILURE_REASONS = (
    "rejected",
    "not_allowed",
    "unreachable",
    "tls",
    "rate_limited",
    "protocol",
    "secret_backend",
    "other",
)
BACKEND_OPERATIONS = (
    "put",
    "get",
    "delete",
    "delete_version",
    "list_keys",
    "list_versions",
    "check",
)

# Most specific class first wins (an MRO walk, as api/status.py does for status codes).
_OUTCOME: dict[type[BrokerError], str] = {
    PermissionDenied: "denied",
    Unauthenticated: "denied",
    QuotaExceeded: "rate_limited",
    InvalidArgument: "invalid",
    FailedPrecondition: "invalid",
    NotFound: "not_found",
    UpstreamError: "upstream_error",
    BackendUnavailable: "backend_unavailable",
}
_REASON: dict[type[BrokerError], str] = {
    CredentialRejected: "rejected",
    PullNotAllowed: "not_allowed",
    RegistryUnreachable: "unreachable",
    RegistryTLSFailure: "tls",
    RateLimited: "rate_limited",
    UpstreamProtocolError: "protocol",
    BackendUnavailable: "secret_backend",
}

MINT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a warm token endpoint answers in tens of ms, a cloud exchange in a few hundred;
the mint deadline (minting/cache.py) is 30 s."""
BACKEND_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: the local store answers in about a millisecond, Vault and AWS in tens."""


def outcome_of(exc: BaseException) -> str:
    """The `outcome` label of a refused token request."""
    return next((_OUTCOME[c] for c in type(exc).__mro__ if c in _OUTCOME), OUTCOME_INTERNAL)


def failure_reason(exc: BaseException) -> str:
    """The `reason` label of a failed mint."""
    return next((_REASON[c] for c in type(exc).__mro__ if c in _REASON), "other")


class BrokerMetrics:
    """The broker's metrics; `registry` is what the metrics listener serves."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self._requests = Counter(
            "pullbroker_token_requests",
            "IssuePullToken and IssueRegistryLogin calls by registry kind and outcome "
            "(kind 'none': refused before a registry was chosen).",
            ["rpc", "kind", "outcome"],
            registry=registry,
        )
        self._request_children = {
            (rpc, kind, outcome): self._requests.labels(rpc, kind, outcome)
            for rpc in RPCS
            for kind in KINDS
            for outcome in OUTCOMES
        }
        lookups = Counter(
            "pullbroker_token_cache_lookups",
            "Token cache lookups: hit (served from memory), miss (started a mint), coalesced "
            "(waited for a mint already in flight).",
            ["result"],
            registry=registry,
        )
        self.cache_hit = lookups.labels("hit")
        self.cache_miss = lookups.labels("miss")
        self.cache_coalesced = lookups.labels("coalesced")
        self._cache_entries = Gauge(
            "pullbroker_token_cache_entries", "Tokens held in the cache.", registry=registry
        )
        self._cache_bytes = Gauge(
            "pullbroker_token_cache_bytes",
            "Bytes the cached tokens are counted for (bounded by the cache's byte limit).",
            registry=registry,
        )
        mint_seconds = Histogram(
            "pullbroker_upstream_mint_seconds",
            "Time one mint took (reading the credential, then the registry's token exchange), "
            "successful or not, by registry kind.",
            ["kind"],
            buckets=MINT_BUCKETS,
            registry=registry,
        )
        self._mint_seconds = {k: mint_seconds.labels(k) for k in KINDS}
        failures = Counter(
            "pullbroker_upstream_mint_failures",
            "Mints that failed, by registry kind and reason (rate_limited includes mints "
            "refused at once while a back-off is in force).",
            ["kind", "reason"],
            registry=registry,
        )
        self._mint_failures = {
            (k, r): failures.labels(k, r) for k in KINDS for r in FAILURE_REASONS
        }
        self._backoffs = Gauge(
            "pullbroker_upstream_backoffs",
            "Registry (host, account) pairs the broker is not calling now, after a 429 or an "
            "exhausted pull quota.",
            registry=registry,
        )
        denials = Counter(
            "pullbroker_policy_denials",
            "Token requests the policy refused (the identity may not pull that repository).",
            ["rpc"],
            registry=registry,
        )
        self._denials = {rpc: denials.labels(rpc) for rpc in RPCS}
        self._limited = Counter(
            "pullbroker_rate_limited_calls",
            "Calls refused by a per-identity rate limit, by limited call.",
            ["call"],
            registry=registry,
        )
        self._limited_children = {call: self._limited.labels(call) for call in LIMITED_CALLS}
        self._backend_up = Gauge(
            "pullbroker_secret_backend_up",
            "1 while the secret backend answers its health check, else 0.",
            ["backend"],
            registry=registry,
        )
        self._backend_seconds = Histogram(
            "pullbroker_secret_backend_seconds",
            "Secret backend call latency by operation.",
            ["backend", "operation"],
            buckets=BACKEND_BUCKETS,
            registry=registry,
        )
        self._backend_failures = Counter(
            "pullbroker_secret_backend_failures",
            "Secret backend calls that failed because the backend was unavailable.",
            ["backend", "operation"],
            registry=registry,
        )
        self._cert_days = Gauge(
            "pullbroker_certificate_expiry_days",
            "Days until the certificate expires (serving: the broker's own; client_ca: the "
            "earliest-expiring CA whose client certificates are accepted).",
            ["certificate"],
            registry=registry,
        )

    def token_request(self, rpc: str, kind: str, outcome: str) -> None:
        self._request_children[(rpc, kind, outcome)].inc()

    def policy_denied(self, rpc: str) -> None:
        self._denials[rpc].inc()

    def rate_limited(self, call: str) -> None:
        child = self._limited_children.get(call)
        (child if child is not None else self._limited.labels(call)).inc()

    def mint_observed(self, kind: str, seconds: float, error: BaseException | None) -> None:
        label = kind if kind in self._mint_seconds else NO_KIND
        self._mint_seconds[label].observe(seconds)
        if error is not None:
            self._mint_failures[(label, failure_reason(error))].inc()

    def watch_cache(self, entries: Callable[[], float], size_bytes: Callable[[], float]) -> None:
        """Read the cache's size at each scrape."""
        self._cache_entries.set_function(entries)
        self._cache_bytes.set_function(size_bytes)

    def watch_backoffs(self, in_force: Callable[[], float]) -> None:
        self._backoffs.set_function(in_force)

    def backend(self, name: str) -> BackendMetrics:
        """The recorder for one secret backend (children bound now)."""
        return BackendMetrics(
            self._backend_up.labels(name),
            {op: self._backend_seconds.labels(name, op) for op in BACKEND_OPERATIONS},
            {op: self._backend_failures.labels(name, op) for op in BACKEND_OPERATIONS},
        )

    def watch_certificates(self, serving_pem: bytes, client_ca_pem: bytes) -> None:
        """Days to expiry of the certificates the broker loaded, computed at each scrape."""
        for name, pem in (("serving", serving_pem), ("client_ca", client_ca_pem)):
            expiry = _earliest_expiry(pem, leaf_only=name == "serving")
            if expiry is not None:
                self._cert_days.labels(name).set_function(_days_until(expiry))


class BackendMetrics:
    """Health and latency of one secret backend."""

    def __init__(
        self,
        up: Gauge,
        seconds: dict[str, Histogram],
        failures: dict[str, Counter],
    ) -> None:
        self._up = up
        self._seconds = seconds
        self._failures = failures

    def set_up(self, available: bool) -> None:
        self._up.set(1 if available else 0)

    def observe(self, operation: str, started: float, failed: bool) -> None:
        self._seconds[operation].observe(time.monotonic() - started)
        if failed:
            self._failures[operation].inc()


def _earliest_expiry(pem: bytes, *, leaf_only: bool) -> datetime | None:
    try:
        certs: Iterable[x509.Certificate] = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    expiries = [c.not_valid_after_utc for c in certs]
    if not expiries:
        return None
    return expiries[0] if leaf_only else min(expiries)


def _days_until(expiry: datetime) -> Callable[[], float]:
    def days() -> float:
        return (expiry - datetime.now(UTC)).total_seconds() / 86400

    return days
