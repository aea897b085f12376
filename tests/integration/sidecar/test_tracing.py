"""`pullbroker-sidecar pull --otlp-endpoint`: the one-shot command exports its spans before it
exits. No collector runs here: the harness's OTLP/HTTP receiver stand-in takes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.https_server import HTTPSServer
from tests.harness.otlp_receiver import exported, otlp_receiver
from tests.harness.sidecar import run_sidecar
from tests.harness.standard import ALICE
from tests.integration.sidecar.world import SidecarWorld

pytestmark = pytest.mark.integration

ISSUE = "/pullbroker.v1.PullService/IssuePullToken"


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPSServer]:
    with otlp_receiver(monkeypatch) as server:
        yield server


class TestPullTracing:
    def test_one_shot_pull_exports_its_trace(
        self, world: SidecarWorld, collector: HTTPSServer, tmp_path: Path
    ) -> None:
        """A traced pull sends its pullbroker.pull span and the IssuePullToken client span it
        parents, as pullbroker-sidecar, before the process exits; without the flag a pull
        sends nothing."""
        image = world.via_door(world.images.app)
        plain = run_sidecar(["pull", image, "--dest", f"oci:{tmp_path / 'a'}"], world.home)
        assert plain.returncode == 0, plain.stderr
        assert collector.count() == 0
        flags = ["--otlp-endpoint", collector.url(), "--output", "json"]
        done = run_sidecar(["pull", image, "--dest", f"oci:{tmp_path / 'b'}", *flags], world.home)
        assert done.returncode == 0, done.stderr
        spans = exported(collector, timeout=0)  # already flushed: the process has exited
        by_name = {s.span.name: s for s in spans}
        pull, client = by_name["pullbroker.pull"], by_name[ISSUE]
        assert {s.service for s in spans} == {"pullbroker-sidecar"}
        assert client.span.trace_id == pull.span.trace_id
        assert client.span.parent_span_id == pull.span.span_id
        body = b"".join(r.body for r in collector.requests)
        assert world.registry.users[ALICE].encode() not in body
