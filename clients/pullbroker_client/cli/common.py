"""Turning parsed flags into a broker client, and errors into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pullbroker_client.broker import BrokerCallError, BrokerClient, BrokerTarget
from pullbroker_client.cli.parser import EXIT_FAILURE, EXIT_USAGE
from pullbroker_client.cli_flags import as_flags
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home

Command = Callable[[argparse.Namespace], int]


class UsageError(ClientError):
    """Flags that do not fit together; exits 2 like argparse's own errors."""


def home_of(args: argparse.Namespace) -> Home:
    return Home.resolve(getattr(args, "home", None))


def client_for(args: argparse.Namespace, role: str = "admin") -> BrokerClient:
    """A client for the broker named by --broker/--ca/--cert/--key, else by the home folder."""
    target = BrokerTarget.from_home(
        home_of(args),
        role,
        address=getattr(args, "broker", None),
        ca=_path(getattr(args, "ca", None)),
        cert=_path(getattr(args, "cert", None)),
        key=_path(getattr(args, "key", None)),
    )
    return BrokerClient(target)


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def run_command(command: Command, args: argparse.Namespace, prog: str = "pullbroker") -> int:
    """Run `command`; expected errors become one line on stderr (no traceback)."""
    try:
        return command(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerCallError as exc:
        print(f"{prog}: error: {_call_error_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except ClientError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _call_error_line(exc: BrokerCallError) -> str:
    line = f"{as_flags(exc.message)} [{exc.code.name}]"
    if exc.retry_after is not None:
        line += f" (retry in {exc.retry_after:g} s)"
    if exc.request_id and exc.code.name in ("INTERNAL", "UNKNOWN"):
        line += f" (request id {exc.request_id})"
    return line
