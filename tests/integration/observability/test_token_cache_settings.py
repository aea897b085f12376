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
    @pytest.mark.parametrize(
        ("cache", "mints"),
        [
            pytest.param(TokenCacheConfig(), 2, id="default: the third call is served from memory"),
            pytest.param(
                TokenCacheConfig(max_entries=1), 3, id="one entry: the second pushes the first out"
            ),
        ],
    )
    def test_max_entries_decides_when_a_token_is_minted_again(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
        cache: TokenCacheConfig,
        mints: int,
    ) -> None:
        """app, other, app: two mints when both fit, three when only one does."""
        assert mints_for_three_pulls(make_broker, token_registry, pushed_images, cache) == mints
