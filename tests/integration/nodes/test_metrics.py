"""The sidecar daemon's /metrics, scraped over HTTP from a running `pullbroker-sidecar run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.canary import find_in_text
from tests.harness.process import free_port
from tests.harness.runtimes import remove_tree, short_dir
from tests.harness.scrape import scrape
from tests.harness.sidecar import SidecarDaemon
from tests.integration.nodes.world import NodeWorld

pytestmark = pytest.mark.integration


@pytest.fixture
def metered_daemon(node_world: NodeWorld) -> Iterator[tuple[SidecarDaemon, str]]:
    folder: Path = short_dir("metrics")
    port = free_port()
    sidecar = SidecarDaemon(
        node_world.home, folder / "s.sock", extra=["--metrics-listen", f"127.0.0.1:{port}"]
    )
    sidecar.start()
    try:
        yield sidecar, f"http://127.0.0.1:{port}/metrics"
    finally:
        sidecar.stop()
        remove_tree(folder)


class TestDaemonMetrics:
    def test_helper_requests_and_refreshes_are_counted(
        self, node_world: NodeWorld, metered_daemon: tuple[SidecarDaemon, str]
    ) -> None:
        """A served login, a cached one and a policy refusal move the helper-request and
        login-refresh counters; no password, login or image name appears in the scrape."""
        daemon, url = metered_daemon
        assert scrape(url).value("pullbroker_sidecar_helper_requests_total",
                                 op="image_login", result="ok") == 0  # fmt: skip
        served = daemon.ask("image_login", image=node_world.basic_app.reference)
        assert served["ok"], served
        assert daemon.ask("image_login", image=node_world.basic_app.reference)["ok"]
        refused = daemon.ask("image_login", image=node_world.basic_other.reference)
        assert refused["error"] == "denied", refused
        found = scrape(url)
        ok = {"op": "image_login", "result": "ok"}
        assert found.value("pullbroker_sidecar_helper_requests_total", **ok) == 2
        denied = {"op": "image_login", "result": "denied"}
        assert found.value("pullbroker_sidecar_helper_requests_total", **denied) == 1
        first = {"what": "registry_login", "reason": "first"}
        assert found.value("pullbroker_sidecar_token_refreshes_total", **first) == 2
        # Pull metrics are there (at zero) for dashboards, whatever this daemon did.
        assert ("pullbroker_sidecar_pulls_total", frozenset({("outcome", "ok")})) in found.samples
        for secret in [served["secret"], *node_world.long_lived()]:
            assert not find_in_text(found.text, secret)
        assert node_world.basic_app.reference not in found.text
