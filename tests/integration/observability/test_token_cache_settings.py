"""The `token_cache` section reaches the running broker: its limits decide when a token is
minted again, counted on the broker's own /metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pullbroker_service.config.token_cache import TokenCacheConfig

from tests.harness.registry import TokenAuthRegistry
from tests.harness.scrape import scrape
from tests.harness.standard import ALICE, StandardImages
from tests.integration.conftest import RunningBroker
from tests.integration.test_api_pull import add_registry

pytestmark = pytest.mark.integration


def mints_for_three_pulls(
    make_broker: Callable[..., RunningBroker],
    token_registry: TokenAuthRegistry,
    images: StandardImages,
    cache: TokenCacheConfig,
) -> float:
    """app, other, then app again: how many times the broker asked the registry."""
    broker = make_broker(metrics_listen="127.0.0.1:0", token_cache=cache)
    assert broker.metrics_url is not None
    with broker.client("admin") as admin, broker.client("node") as node:
        add_registry(admin, "team", token_registry, ALICE)
        for image in (images.app, images.other, images.app):
            node.issue_pull_token(image.reference)
    found = scrape(broker.metrics_url)
    assert found.value("pullbroker_token_cache_entries") <= cache.max_entries
    return found.value("pullbroker_upstream_mint_seconds_count", kind="generic")


class TestTokenCacheSettings:
    def test_default_cache_keeps_both_tokens(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """Two repositories, two mints: the third call is served from memory."""
        mints = mints_for_three_pulls(
            make_broker, token_registry, pushed_images, TokenCacheConfig()
        )
        assert mints == 2

    def test_one_entry_cache_mints_again(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """max_entries 1: the second repository pushes the first out, so it is minted anew."""
        mints = mints_for_three_pulls(
            make_broker, token_registry, pushed_images, TokenCacheConfig(max_entries=1)
        )
        assert mints == 3
