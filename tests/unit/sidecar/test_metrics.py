"""Sidecar metrics: built only on demand, bounded labels."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import generate_latest
from pullbroker_sidecar.errors import PullCancelled, UnsupportedManifest
from pullbroker_sidecar.metrics import SidecarMetrics, pull_outcome


class TestSidecarMetrics:
    def test_importing_the_module_does_not_import_prometheus_client(self) -> None:
        """`pull` and the helpers pay nothing for metrics they do not serve (~70 ms)."""
        code = (
            "import sys, pullbroker_sidecar.metrics, pullbroker_sidecar.pull.engine, "
            "pullbroker_sidecar.integrations.docker_credential; "
            "print('prometheus_client' in sys.modules)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.stdout.strip() == "False", done.stderr

    def test_outcomes_are_bounded(self) -> None:
        """Errors map to fixed outcomes; an unknown helper op or result is not a label."""
        assert pull_outcome(UnsupportedManifest("x")) == "unsupported"
        assert pull_outcome(PullCancelled("x")) == "cancelled"
        assert pull_outcome(RuntimeError("x")) == "other"
        metrics = SidecarMetrics()
        metrics.helper_request("op-from-a-stranger", "weird-code")
        metrics.pulled("not-an-outcome")
        text = generate_latest(metrics.registry).decode()
        assert "stranger" not in text
        assert "weird" not in text
        assert 'pullbroker_sidecar_helper_requests_total{op="other",result="internal"} 1.0' in text
        assert 'pullbroker_sidecar_pulls_total{outcome="other"} 1.0' in text

    def test_mirror_labels_are_bounded(self) -> None:
        """Mirror requests: a kind outside the four and any status become bounded labels."""
        metrics = SidecarMetrics()
        metrics.mirror_request("blob", 206, 0.01)
        metrics.mirror_request("/v2/some/path", 404, 0.02)
        metrics.mirror_request("manifest", 999, 0.03)
        metrics.mirror_blob("store", 1234)
        text = generate_latest(metrics.registry).decode()
        assert "some/path" not in text
        assert 'pullbroker_sidecar_mirror_requests_total{kind="blob",status="2xx"} 1.0' in text
        assert 'pullbroker_sidecar_mirror_requests_total{kind="other",status="4xx"} 1.0' in text
        assert 'pullbroker_sidecar_mirror_requests_total{kind="manifest",status="5xx"} 1.0' in text
        assert 'pullbroker_sidecar_mirror_blob_bytes_total{source="store"} 1234.0' in text
