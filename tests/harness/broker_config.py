"""The config file a test broker runs with: it may dial the harness's loopback registries.

The product refuses loopback registry URLs and token realms unless configured (SSRF); every
registry the tests start listens on 127.0.0.1, so test brokers say so explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pullbroker_client.registry.addresses import DialPolicy

TEST_SETTINGS: dict[str, Any] = {"allow_loopback_registries": True}
LOOPBACK = DialPolicy(allow_loopback=True)
"""The dial policy of minters built directly in tests: the harness listens on 127.0.0.1."""


def write_test_config(path: Path, **settings: Any) -> Path:
    """Write a broker config allowing loopback registries (plus `settings`) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**TEST_SETTINGS, **settings}, sort_keys=True))
    return path
