"""The client side of the `pullbroker` command (`registry ...`).

The broker's own entry point (`pullbroker_service.cli`) adds `serve` to the parser built here,
so one `pullbroker` command covers both; this package never imports the broker.
"""

from __future__ import annotations

import argparse
from typing import Any

from pullbroker_client.cli.audit import add_audit_commands
from pullbroker_client.cli.common import Command, run_command
from pullbroker_client.cli.deployment import add_deployment_commands
from pullbroker_client.cli.health import add_health_command
from pullbroker_client.cli.parser import EXIT_USAGE, Parser, add_common_options
from pullbroker_client.cli.policy import add_policy_commands
from pullbroker_client.cli.registry import add_registry_commands

__all__ = ["Command", "build_parser", "main", "run"]


def build_parser(prog: str = "pullbroker") -> tuple[argparse.ArgumentParser, Any]:
    """The top-level parser and its subparsers action (to add more commands to)."""
    parser = Parser(
        prog=prog,
        description="pullbroker: registry credentials in, short-lived scoped pull tokens out.",
    )
    add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_registry_commands(subparsers)
    add_deployment_commands(subparsers)
    add_policy_commands(subparsers)
    add_audit_commands(subparsers)
    add_health_command(subparsers)
    return parser, subparsers


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv` and run the chosen command; returns the exit code."""
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage()
        return EXIT_USAGE
    return run_command(func, args, parser.prog)


def main(argv: list[str] | None = None) -> int:
    """`pullbroker` without `serve` (the client half alone)."""
    parser, _ = build_parser()
    return run(parser, argv)
