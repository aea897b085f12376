"""Pull metrics: the engine counts pulls by outcome and blob bytes by where they came from.

A one-shot `pullbroker-sidecar pull` exits before any scraper could read it, so these run
the engine in this process against the real broker and registry, and read the metrics
through prometheus-client's text exposition and parser, as a scraper would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pullbroker_client.broker import AsyncBrokerClient, BrokerCallError, BrokerTarget
from pullbroker_client.home import Home
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.pull.destinations import parse_destination
from pullbroker_sidecar.pull.engine import PullEngine

from tests.harness.canary import find_in_text
from tests.harness.standard import ALICE
from tests.integration.sidecar.world import SidecarWorld

pytestmark = pytest.mark.integration


def _samples(metrics: SidecarMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class TestPullMetrics:
    async def test_pull_outcomes_and_bytes(self, world: SidecarWorld, tmp_path: Path) -> None:
        """A first pull fetches every blob from the registry, a second finds them in the
        node store; a policy denial counts as a denied pull; a token refresh is counted."""
        metrics = SidecarMetrics()
        target = BrokerTarget.from_home(Home(world.home), "node")
        image = world.via_door(world.images.app)
        async with AsyncBrokerClient(target) as broker:
            engine = PullEngine(broker, store=tmp_path / "store", metrics=metrics)
            first = await engine.pull(image, parse_destination(f"oci:{tmp_path / 'a'}"))
            await engine.pull(image, parse_destination(f"oci:{tmp_path / 'b'}"))
            forbidden = f"{world.registry.host}/{world.images.app.repository}:v1"
            with pytest.raises(BrokerCallError):
                await engine.pull(forbidden, parse_destination(f"oci:{tmp_path / 'c'}"))
        found = _samples(metrics)

        def value(name: str, **labels: str) -> float:
            return found.get((name, frozenset(labels.items())), 0.0)

        assert value("pullbroker_sidecar_pulls_total", outcome="ok") == 2
        assert value("pullbroker_sidecar_pulls_total", outcome="denied") == 1
        assert value("pullbroker_sidecar_blob_bytes_total", source="registry") == first.bytes
        assert value("pullbroker_sidecar_blob_bytes_total", source="store") == first.bytes
        assert value("pullbroker_sidecar_token_refreshes_total", what="pull_token",
                     reason="first") == 3  # fmt: skip
        text = generate_latest(metrics.registry).decode()
        assert not find_in_text(text, world.registry.users[ALICE])
        assert world.images.app.repository not in text
