"""argparse pieces shared by every `pullbroker` command.

Two deliberate departures from argparse's defaults: no abbreviated options (`--pass` must
not quietly mean `--password-stdin`), and a usage error never echoes the arguments it did not
recognise, because one of them may be a password somebody tried to pass on the command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2
EXIT_FAILURE = 1
OUTPUT_FORMATS = ("table", "json")

_NO_ARGV_SECRETS_HINT = (
    "a password is never accepted as an argument: pipe it to --password-stdin, "
    "or run on a terminal to be prompted"
)


class Parser(argparse.ArgumentParser):
    """ArgumentParser without abbreviations and without echoing unknown arguments."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if any(_looks_like_password_flag(a) for a in argv):
            self.error(_NO_ARGV_SECRETS_HINT)
        return super().parse_known_args(argv, namespace)

    def parse_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            options = sorted({a.split("=", 1)[0] for a in extras if a.startswith("-")})
            shown = f" ({', '.join(options)})" if options else ""
            self.error(f"{len(extras)} unrecognized argument(s){shown}")
        return parsed

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts and people read the last line.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _looks_like_password_flag(arg: str) -> bool:
    flag = arg.split("=", 1)[0].lower()
    return (flag.startswith("--pass") and flag != "--password-stdin") or flag in ("-p", "--pw")


def add_common_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """--home, --broker, --ca, --cert, --key, --output (accepted before or after the command)."""
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("broker connection")
    group.add_argument(
        "--home",
        default=default,
        help="home folder (default: $PULLBROKER_HOME, else ~/.pullbroker)",
    )
    group.add_argument(
        "--broker",
        default=default,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="broker address, or several replicas' (balanced, failing over); default: broker.json",
    )
    group.add_argument("--ca", default=default, metavar="PEM_FILE", help="CA that signs the broker")
    group.add_argument("--cert", default=default, metavar="PEM_FILE", help="client certificate")
    group.add_argument("--key", default=default, metavar="PEM_FILE", help="client private key")
    parser.add_argument(
        "--output",
        "-o",
        choices=OUTPUT_FORMATS,
        default="table" if top_level else argparse.SUPPRESS,
        help="output format (default: table)",
    )
