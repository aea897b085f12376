"""The only place adapters are wired: home -> dev CA -> stores -> minters -> app -> api -> server.

`start_broker` returns a running broker (tests run it in-process); `serve` is what
`pullbroker serve` runs: start, write <home>/broker.json, wait for SIGTERM/SIGINT, drain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pullbroker_client.home import Home

from pullbroker_service.api.server import BuiltServer, ServerTls, start_server
from pullbroker_service.app.policy_source import PolicySource
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.config import BrokerConfig
from pullbroker_service.devca import ensure_dev_ca
from pullbroker_service.logging import configure_logging, get_logger
from pullbroker_service.minting.azure import AzureMinter
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.minting.ecr import EcrConfig, EcrMinter
from pullbroker_service.minting.google import GoogleMinter
from pullbroker_service.minting.registry_of_kinds import MinterRegistry
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore

_log = get_logger("pullbroker_service.main")


@dataclass
class Broker:
    """A running broker and what must be closed when it stops."""

    config: BrokerConfig
    server: BuiltServer
    closers: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.server.address

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish, close stores and minters."""
        wait = self.config.shutdown_grace_seconds if grace is None else grace
        await self.server.stop(wait)
        for close in reversed(self.closers):
            with suppress(Exception):  # one failing close must not keep the others open
                await close()
        _remove_broker_json(self.config.home, self.address)
        _log.info("broker_stopped", address=self.address)


def prepare_home(home: Home) -> None:
    """Create the home folder and its private subfolders (0700)."""
    for folder in (home.root, home.secrets_dir, home.logs_dir, home.tls_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


async def start_broker(config: BrokerConfig) -> Broker:
    """Build every adapter from `config`, start the server, write broker.json."""
    home = config.home
    prepare_home(home)
    configure_logging(log_file=home.broker_log, level=config.log_level, stderr=config.log_to_stderr)
    made = ensure_dev_ca(home, config.node_hostname)
    if made:
        _log.info("dev_ca_created", files=[str(p.relative_to(home.root)) for p in made])
    policy = PolicySource(config.policy_file)
    store = SqliteMetadataStore(home.metadata_db)
    secrets = LocalSecretBackend(home.secrets_db, FileKeyWrapper.open(home.kek_key))
    minters = build_minters(config)
    cache = TokenCache()
    closers: list[Any] = [store.close, secrets.close, minters.aclose]
    try:
        await secrets.check()
        server = await start_server(
            registries=Registries(store, secrets, minters, cache),
            issuer=TokenIssuer(store, secrets, minters, cache, policy),
            roles_for=lambda name: policy.current().roles_for(name),
            tls=_server_tls(home),
            listen=config.listen,
            limits=config.limits,
            insecure_dev_port=config.insecure_dev_port,
        )
    except BaseException:
        for close in reversed(closers):
            with suppress(Exception):
                await close()
        raise
    broker = Broker(config, server, closers)
    write_broker_json(home, server.address)
    _log.info("broker_started", address=server.address, home=str(home.root))
    return broker


def build_minters(config: BrokerConfig) -> MinterRegistry:
    """Every registry kind: token-endpoint kinds on one BearerMinter, and the cloud minters."""
    ecr = EcrConfig(endpoint_url=config.ecr_endpoint_url, sts_endpoint_url=config.sts_endpoint_url)
    return MinterRegistry.default(
        BearerMinter(), ecr=EcrMinter(ecr), google=GoogleMinter(), azure=AzureMinter()
    )


def _server_tls(home: Home) -> ServerTls:
    return ServerTls(
        certificate_chain=home.cert("server").read_bytes(),
        private_key=home.key("server").read_bytes(),
        client_ca=home.ca_cert.read_bytes(),
    )


def write_broker_json(home: Home, address: str) -> None:
    """Atomically replace broker.json, so a client never reads half a file."""
    tmp = home.broker_json.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}) + "\n", encoding="utf-8")
    os.replace(tmp, home.broker_json)


def _remove_broker_json(home: Home, address: str) -> None:
    # Only our own: a second broker may have taken over the home folder since.
    with suppress(OSError, ValueError):
        data = json.loads(home.broker_json.read_text(encoding="utf-8"))
        if data.get("address") == address and data.get("pid") == os.getpid():
            home.broker_json.unlink()


async def serve(config: BrokerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain in-flight calls and exit."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: broker.json appears during start_broker, and a supervisor may signal
    # as soon as it sees it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        broker = await start_broker(config)
        try:
            # Everything built so far lives as long as the process: keep the collector from
            # rescanning it on every full collection of the request path's short-lived objects.
            gc.collect()
            gc.freeze()
            await stopping.wait()
            _log.info("shutdown_requested", grace_seconds=config.shutdown_grace_seconds)
        finally:
            await broker.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
