"""`run --mirror ...` options -> a started MirrorServer (or None without --mirror)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import structlog
from pullbroker_client.home import Home

from pullbroker_sidecar.errors import InvalidOption
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.mirror.config import MirrorConfig, parse_listen
from pullbroker_sidecar.mirror.server import MirrorServer
from pullbroker_sidecar.pull.limits import parse_size
from pullbroker_sidecar.pull.store import STORE_DIR, ContentStore
from pullbroker_sidecar.tokens import PullTokenIssuer

log = structlog.get_logger("pullbroker_sidecar.mirror")


def mirror_config(args: argparse.Namespace) -> MirrorConfig | None:
    """The mirror's settings from `run`'s options; InvalidOption names a bad flag."""
    if not args.mirror:
        return None
    host, port = parse_listen(args.mirror, allow_remote=args.mirror_allow_remote)
    try:
        max_size = parse_size(args.store_max_size)
    except ValueError as exc:
        raise InvalidOption(f"--store-max-size: {exc}") from None
    if args.mirror_serve_stale < 0:
        raise InvalidOption("--mirror-serve-stale must be 0 or more seconds")
    return MirrorConfig(
        host,
        port,
        allow_remote=args.mirror_allow_remote,
        allowed_uids=frozenset({0, *args.mirror_allow_uid}),
        store_max_size=max_size,
        serve_stale=args.mirror_serve_stale,
    )


async def start_mirror(
    args: argparse.Namespace,
    home: Home,
    broker: PullTokenIssuer,
    metrics: SidecarMetrics | None = None,
) -> MirrorServer | None:
    """Start the mirror `args` ask for, on this loop; None when they ask for none."""
    config = mirror_config(args)
    if config is None:
        return None
    chosen = getattr(args, "mirror_store", None)
    folder = Path(chosen) if chosen else home.root / STORE_DIR
    store = await asyncio.to_thread(ContentStore.open, folder)
    server = MirrorServer(config, broker, store, metrics)
    try:
        await server.start()
    except OSError as exc:
        raise InvalidOption(f"--mirror {args.mirror}: cannot listen ({exc.strerror})") from None
    log.info(
        "mirror_started",
        address=f"{config.host}:{server.port}",
        store_max_size=config.store_max_size,
        allowed_uids=sorted(config.allowed_uids),
    )
    return server
