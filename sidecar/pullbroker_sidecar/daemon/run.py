"""`pullbroker-sidecar run`: wire the channel, the login cache and the socket server.

    pullbroker-sidecar run [--socket PATH] [--image REF ...] [--images-file FILE]
        [--rotation-check SECONDS] [--metrics-listen HOST:PORT] [--otlp-endpoint URL] [--home DIR]
        [--broker HOST:PORT] [--ca/--cert/--key PEM]
        [--mirror HOST:PORT [--mirror-allow-remote] [--mirror-allow-uid UID ...]
         [--mirror-serve-stale SECONDS] [--store-max-size SIZE]]   (see mirror/)

Logs are JSON lines on stderr (snake_case past-tense events); no token, password or
service-account token is ever passed to the logger. SIGTERM or SIGINT stops it: the
socket stops accepting, requests being answered finish, channels close, the socket
file is removed. With --metrics-listen, Prometheus metrics (metrics.py) are served over
plain HTTP on that address until then. With --otlp-endpoint (or $OTEL_EXPORTER_OTLP_ENDPOINT)
every broker call is a client span sent to that OpenTelemetry collector.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import structlog
from pullbroker_client import tracing
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home
from pullbroker_client.metrics_http import MetricsServer, parse_listen, serve_metrics

from pullbroker_sidecar.daemon.channel import BrokerChannel, ChannelConfig
from pullbroker_sidecar.daemon.login_cache import LoginCache, Logins
from pullbroker_sidecar.daemon.protocol import default_socket
from pullbroker_sidecar.daemon.server import SidecarServer
from pullbroker_sidecar.errors import InvalidOption
from pullbroker_sidecar.metrics import SidecarMetrics
from pullbroker_sidecar.mirror.wiring import start_mirror

log = structlog.get_logger("pullbroker_sidecar.run")
TRACING_SERVICE_NAME = "pullbroker-sidecar"


def configure_logging() -> None:
    """JSON lines on stderr."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        # sys.stderr looked up per logger, not bound once: it may be replaced (tests, daemons).
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def images_from(args: argparse.Namespace) -> list[str]:
    """--image values plus the lines of --images-file."""
    images = list(args.image)
    if args.images_file:
        try:
            text = Path(args.images_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidOption(
                f"cannot read --images-file {args.images_file}: {exc.strerror}"
            ) from None
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                images.append(entry)
    return images


def run_command(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; the exit status."""
    if args.rotation_check <= 0:
        raise InvalidOption("--rotation-check must be a positive number of seconds")
    if args.metrics_listen is not None:
        try:
            parse_listen(args.metrics_listen)
        except ValueError as exc:
            raise InvalidOption(f"--metrics-listen: {exc}") from None
    try:
        traced = tracing.start(args.otlp_endpoint, TRACING_SERVICE_NAME)
    except ValueError as exc:
        raise InvalidOption(str(exc)) from None
    configure_logging()
    home = Home.resolve(args.home)
    socket_path = Path(args.socket or default_socket(str(home.root))).absolute()
    try:
        asyncio.run(_serve(args, home, socket_path))
    finally:
        if traced is not None:
            traced.shutdown()
    return 0


async def _serve(args: argparse.Namespace, home: Home, socket_path: Path) -> None:
    config = ChannelConfig(
        home, address=args.broker, ca=_path(args.ca), cert=_path(args.cert), key=_path(args.key)
    )
    images = images_from(args)
    metrics = SidecarMetrics() if args.metrics_listen is not None else None
    channel = BrokerChannel(config)
    await channel.start()
    try:
        logins = Logins(LoginCache(channel, metrics=metrics), images)
    except ClientError as exc:
        await channel.close()
        raise InvalidOption(f"an --image does not parse: {exc}") from None
    server = SidecarServer(socket_path, logins, channel, metrics)
    listener: MetricsServer | None = None
    try:
        if metrics is not None:
            listener = serve_metrics(args.metrics_listen, metrics.registry)
            log.info("metrics_listening", address=listener.address)
        await server.start()
    except BaseException:
        if listener is not None:
            listener.stop()
        await channel.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        mirror = await start_mirror(args, home, channel, metrics)
    except BaseException:
        await server.close()
        await channel.close()
        if listener is not None:
            await asyncio.to_thread(listener.stop)
        raise
    watcher = asyncio.create_task(channel.watch(args.rotation_check))
    log.info("daemon_started", socket=str(socket_path), images=len(images), **channel.status())
    try:
        await stop.wait()
    finally:
        log.info("daemon_stopping")
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if mirror is not None:
            await mirror.close()
        await server.close()
        await channel.close()
        if listener is not None:
            await asyncio.to_thread(listener.stop)
        log.info("daemon_stopped")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
