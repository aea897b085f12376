"""`pullbroker-sidecar`: the node agent's command line.

    pullbroker-sidecar pull IMAGE --dest oci:DIR [--platform OS/ARCH[/VARIANT]]
        [--registry NAME] [--concurrency N] [--quiet] [--output table|json]
        [--home DIR] [--broker HOST:PORT] [--ca PEM] [--cert PEM] [--key PEM]

The node certificate (`tls/node.crt|key` in the home folder) proves who this node is; the
broker answers with a short-lived token for that one repository, which lives in memory
only. Progress goes to stderr (redrawn on a terminal, plain lines otherwise); the result
to stdout. A failure is one line on stderr and exit status 1 (2 for usage, 130 when
interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pullbroker_client.broker import AsyncBrokerClient, BrokerTarget
from pullbroker_client.cli.parser import EXIT_FAILURE, Parser, add_common_options
from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home

from pullbroker_sidecar.errors import PullError
from pullbroker_sidecar.pull.download import DEFAULT_CONCURRENCY
from pullbroker_sidecar.pull.engine import PullEngine, PullResult
from pullbroker_sidecar.pull.platform import Platform
from pullbroker_sidecar.pull.progress import progress_for

PROG = "pullbroker-sidecar"
NODE_ROLE = "node"
EXIT_INTERRUPTED = 130
MAX_CONCURRENCY = 16
_OCI = "oci:"


def build_parser() -> Parser:
    """The argument parser (exposed for --help tests and docs)."""
    parser = Parser(prog=PROG, description="pullbroker node agent")
    add_common_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    pull = commands.add_parser(
        "pull",
        help="pull an image with a short-lived token from the broker",
        description="Pull IMAGE into an OCI image layout, tagged with the image's tag. "
        "Every blob is verified against its digest before it is stored.",
    )
    add_common_options(pull)
    pull.add_argument("image", metavar="IMAGE", help="e.g. registry.example.com/team/app:1.2")
    pull.add_argument("--dest", required=True, metavar="oci:DIR", help="OCI layout to write")
    pull.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="which manifest of a multi-platform image (default: this host, linux/<arch>)",
    )
    pull.add_argument(
        "--registry", metavar="NAME", help="broker registry record, when several serve the host"
    )
    pull.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"blobs downloaded at once (1-{MAX_CONCURRENCY}, default {DEFAULT_CONCURRENCY})",
    )
    pull.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        dest = _parse_dest(args.dest)
        platform = Platform.parse(args.platform) if args.platform else None
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            parser.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        result = asyncio.run(_pull(args, dest, platform))
    except (PullError, ClientError) as exc:
        return _fail(f"pull of {args.image} failed: {exc}")
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"pull of {args.image} failed: cannot write{where}: {exc.strerror}")
    except KeyboardInterrupt:
        return _fail(
            f"pull of {args.image} interrupted; nothing partial was kept", EXIT_INTERRUPTED
        )
    _print_result(result, args.output)
    return 0


async def _pull(args: argparse.Namespace, dest: Path, platform: Platform | None) -> PullResult:
    target = BrokerTarget.from_home(
        Home.resolve(args.home),
        NODE_ROLE,
        address=args.broker,
        ca=_path(args.ca),
        cert=_path(args.cert),
        key=_path(args.key),
    )
    progress = progress_for(sys.stderr, quiet=args.quiet)
    async with AsyncBrokerClient(target) as broker:
        engine = PullEngine(
            broker, registry=args.registry, concurrency=args.concurrency, progress=progress
        )
        return await engine.pull(args.image, dest, platform=platform)


def _parse_dest(text: str) -> Path:
    if not text.startswith(_OCI) or len(text) == len(_OCI):
        raise PullError(f"--dest {text!r} is not oci:DIR (only OCI layout destinations exist)")
    return Path(text[len(_OCI) :]).expanduser().absolute()


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _print_result(result: PullResult, output: str) -> None:
    if output == "json":
        document: dict[str, Any] = result.to_json()
        print(json.dumps(document))
        return
    platform = f"{result.platform}, " if result.platform else ""
    print(
        f"pulled {result.image} ({platform}{result.layers} layers, "
        f"{result.bytes / 1048576:.1f} MiB) into oci:{result.dest} as {result.digest}"
    )


def _fail(message: str, status: int = EXIT_FAILURE) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
