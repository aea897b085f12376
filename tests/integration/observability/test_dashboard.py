"""The shipped Grafana dashboard and PrometheusRule query only metrics that exist.

Every PromQL expression in deploy/grafana/*.json and deploy/monitoring/*.yaml is reduced to
the metric names it selects, and each must be in a scrape of a running broker (over HTTP)
or of the sidecar's metrics served by the same listener the daemon uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pullbroker_client.metrics_http import serve_metrics
from pullbroker_sidecar.metrics import SidecarMetrics

from tests.harness.scrape import scrape
from tests.integration.conftest import RunningBroker

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "clamp_max", "abs", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "topk", "bottomk", "time",
    "vector", "scalar", "label_replace", "absent", "delta", "deriv", "sort", "sort_desc",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, grouping labels,
    strings, Grafana variables, functions and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        follows = text[match.end() :].lstrip()[:1]
        if word in _FUNCTIONS or follows == "(" or re.fullmatch(r"e\d*|inf|nan", word):
            continue
        names.add(word)
    return names


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]


def _rule_exprs() -> Iterator[tuple[str, str]]:
    for path in sorted((DEPLOY / "monitoring").glob("*.yaml")):
        document: Any = yaml.safe_load(path.read_text())
        for group in document["spec"]["groups"]:
            for rule in group["rules"]:
                yield f"{path.name}: {rule['alert']}", rule["expr"]


@pytest.fixture
def exported(make_broker: Callable[..., RunningBroker]) -> Iterator[set[str]]:
    """Every sample name a running broker and the sidecar's listener serve."""
    broker = make_broker(metrics_listen="127.0.0.1:0")
    assert broker.metrics_url is not None
    sidecar = serve_metrics("127.0.0.1:0", SidecarMetrics().registry)
    try:
        yield scrape(broker.metrics_url).names() | scrape(sidecar.url).names()
    finally:
        sidecar.stop()


class TestQueriesNameRealMetrics:
    def test_the_extractor_reads_promql(self) -> None:
        """Metric names are found; labels, functions, strings and variables are not."""
        expr = (
            "histogram_quantile(0.99, sum by (kind, le) "
            '(rate(a_bucket{kind="x"}[$__rate_interval]))) / on (kind) b_total > 0.2 and c'
        )
        assert metric_names(expr) == {"a_bucket", "b_total", "c"}

    def test_dashboard_and_rules_name_exported_metrics(self, exported: set[str]) -> None:
        """Every metric a panel or alert queries is in a scrape (histograms as _bucket,
        _sum and _count; counters as _total)."""
        exprs = [*_dashboard_exprs(), *_rule_exprs()]
        assert len(exprs) > 10
        missing = {
            (where, name)
            for where, expr in exprs
            for name in metric_names(expr)
            if name not in exported
        }
        assert not missing
        alerts = {where.split(": ")[1] for where, _ in _rule_exprs()}
        assert alerts >= {
            "PullbrokerSecretBackendDown",
            "PullbrokerMintErrorRate",
            "PullbrokerCertificateExpiringSoon",
        }
