"""The `pullbroker` entry point: the client commands plus the server-side ones, `serve` (runs
the broker) and `secrets migrate` (moves credentials between secret backends)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pullbroker_client.cli import build_parser, run
from pullbroker_client.cli.common import UsageError
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home

from pullbroker_service.bootstrap.main import serve
from pullbroker_service.bootstrap.migration import run_database_move, run_migration
from pullbroker_service.config.broker import (
    DEFAULT_LISTEN,
    SECRET_BACKENDS,
    BrokerConfig,
    ConfigError,
    load_config,
    require_backend_settings,
)
from pullbroker_service.domain.errors import BrokerError

_MIGRATE_HELP = """\
Move every registry credential from the secret backend it is in now to BACKEND. Each copy
is read back and compared before the record is switched to it; then the old secret is
deleted. Run it with the broker STOPPED: it works on <home>/metadata.db directly and
refuses while a broker runs on the home folder (and a broker refuses to start while a
migration is unfinished). Safe to interrupt: run it again to resume; records already moved
are skipped and half-made copies are cleaned up. Then set `secret_backend: BACKEND` in the
config file and start the broker. Settings of both backends come from --config.

With --to-database instead: copy the registries, deployments and the local secret store's
envelopes from the home's SQLite files into the PostgreSQL database named by the config's
`database` section, and verify every record and envelope. Resumable the same way; the SQLite
files are only read.
"""


def _config(
    args: argparse.Namespace, listen: str | None = None, insecure_dev_port: int | None = None
) -> BrokerConfig:
    """load_config from --home/--config and the flags; a bad setting is a usage error."""
    home = getattr(args, "home", None)
    try:
        return load_config(
            home=Home.resolve(home) if home else None,
            config_file=Path(args.config).expanduser() if args.config else None,
            listen=listen,
            insecure_dev_port=insecure_dev_port,
            metrics_listen=getattr(args, "metrics_listen", None),
            otlp_endpoint=getattr(args, "otlp_endpoint", None),
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the broker in the foreground until SIGTERM/SIGINT."""
    config = _config(args, listen=args.listen, insecure_dev_port=args.insecure_dev_port)
    try:
        asyncio.run(serve(config))
    except (BrokerError, OSError) as exc:
        # Startup failures a person can fix: a bad policy, a taken port, an unreadable file.
        raise ClientError(f"the broker could not start: {exc}") from None
    return 0


def add_serve_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_parser = subparsers.add_parser("serve", help="run the broker (mTLS gRPC)")
    serve_parser.add_argument(
        "--home", default=argparse.SUPPRESS, help="home folder (default: ~/.pullbroker)"
    )
    serve_parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help=f"mTLS address (default {DEFAULT_LISTEN})",
    )
    serve_parser.add_argument(
        "--config", default=None, metavar="FILE", help="settings file (YAML, or TOML if *.toml)"
    )
    serve_parser.add_argument(
        "--insecure-dev-port",
        type=int,
        default=None,
        metavar="PORT",
        help="ALSO open a plaintext port on 127.0.0.1 (development only; never in production)",
    )
    serve_parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics over plain HTTP at http://HOST:PORT/metrics "
        "(default: off; e.g. 127.0.0.1:9090, or 0.0.0.0:9090 in a pod)",
    )
    serve_parser.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="send OpenTelemetry traces to this OTLP/HTTP collector, e.g. "
        "http://otel-collector:4318 (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )
    serve_parser.set_defaults(func=cmd_serve)


def cmd_secrets_migrate(args: argparse.Namespace) -> int:
    """Move every credential to --to; exit 1 if some could not be moved. With
    --to-database, move the home's SQLite metadata into PostgreSQL instead."""
    config = _config(args)
    if args.to_database:
        return _move_to_database(config)
    try:
        require_backend_settings(config.secrets, args.to)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        report = asyncio.run(run_migration(config, args.to, print))
    except ConfigError as exc:  # a backend that records are in has no settings
        raise UsageError(str(exc)) from None
    except BrokerError as exc:
        raise ClientError(
            f"the migration stopped: {exc}. Nothing half-done is left in use: fix the cause "
            "and run the same command again to resume"
        ) from None
    print(
        f"{len(report.moved)} moved, {len(report.already)} already in {args.to}, "
        f"{len(report.failed)} not moved, {report.cleaned} leftovers removed"
    )
    if not report.complete:
        print(
            "the registries listed above were not moved (their stored credential could not be "
            "read or copied); after the switch they fail until their credential is rotated or "
            "they are re-created: fix the cause and run this again, or do that",
            file=sys.stderr,
        )
        return 1
    print(f"done: set `secret_backend: {args.to}` in the config file, then start the broker")
    return 0


def _move_to_database(config: BrokerConfig) -> int:
    try:
        report = asyncio.run(run_database_move(config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except BrokerError as exc:
        raise ClientError(
            f"the move to the database stopped: {exc}. The SQLite files were not changed: fix "
            "the cause and run the same command again to resume"
        ) from None
    print(report.summary())
    return 0


def add_secrets_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secrets = subparsers.add_parser("secrets", help="manage the secret backend (broker stopped)")
    actions = secrets.add_subparsers(dest="secrets_command", metavar="COMMAND", required=True)
    migrate = actions.add_parser(
        "migrate",
        help="move every credential to another secret backend (run with the broker stopped)",
        description=_MIGRATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = migrate.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to",
        choices=SECRET_BACKENDS,
        metavar="BACKEND",
        help=f"where the credentials go: {', '.join(SECRET_BACKENDS)}",
    )
    where.add_argument(
        "--to-database",
        action="store_true",
        help="copy the registries, deployments and local secret envelopes from the home's "
        "SQLite files into the PostgreSQL database the config's `database` section names, "
        "then verify the copy (the KEK stays where it is; SQLite is left unchanged)",
    )
    migrate.add_argument(
        "--config", default=None, metavar="FILE", help="the broker's settings file"
    )
    migrate.add_argument(
        "--home", default=argparse.SUPPRESS, help="home folder (default: ~/.pullbroker)"
    )
    migrate.set_defaults(func=cmd_secrets_migrate)


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    add_serve_command(subparsers)
    add_secrets_commands(subparsers)
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
