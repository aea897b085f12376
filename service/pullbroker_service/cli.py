"""The `pullbroker` entry point: the client commands plus `serve`, which runs the broker."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pullbroker_client.cli import build_parser, run
from pullbroker_client.cli.common import UsageError
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home

from pullbroker_service.config import DEFAULT_LISTEN, ConfigError, load_config
from pullbroker_service.devca import DevCAError
from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.main import serve


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the broker in the foreground until SIGTERM/SIGINT."""
    try:
        config = load_config(
            home=Home.resolve(args.home),
            config_file=Path(args.config).expanduser() if args.config else None,
            listen=args.listen,
            insecure_dev_port=args.insecure_dev_port,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        asyncio.run(serve(config))
    except (BrokerError, DevCAError, OSError) as exc:
        # Startup failures a person can fix: a bad policy, a taken port, an unreadable file.
        raise ClientError(f"the broker could not start: {exc}") from None
    except RuntimeError as exc:
        if "bind" in str(exc).lower() or "port" in str(exc).lower():
            raise ClientError(
                f"cannot listen on {config.listen}: is another broker running? "
                "Pick another address with --listen"
            ) from None
        raise
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
    serve_parser.add_argument("--config", default=None, metavar="FILE", help="YAML settings")
    serve_parser.add_argument(
        "--insecure-dev-port",
        type=int,
        default=None,
        metavar="PORT",
        help="ALSO open a plaintext port on 127.0.0.1 (development only; never in production)",
    )
    serve_parser.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    add_serve_command(subparsers)
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
