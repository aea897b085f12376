"""Scrape a Prometheus endpoint the way Prometheus does, and read samples by name and labels.

The text is parsed by prometheus-client's own parser (`text_string_to_metric_families`),
the same format rules a real scraper applies, so a test that passes here reads what an
operator's Prometheus would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: the raw text and every sample in it."""

    text: str
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
    families: frozenset[str]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels (0.0 when absent, as PromQL sees it)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def sum(self, name: str, **labels: str) -> float:
        """Sum of every `name` sample whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        """Every sample name (histograms: _bucket, _sum, _count; counters: _total, _created)."""
        return {n for n, _ in self.samples}


def scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=10, trust_env=False)
    response.raise_for_status()
    text = response.text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(text, samples, frozenset(families))
